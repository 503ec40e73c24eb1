"""Where the patient goes and how care is handed over (转运与交接)."""

from enum import StrEnum

from pydantic import AwareDatetime

from hub.model.base import CanonicalModel, Code, Identifier, Name, Text

__all__ = ["Destination", "Handover", "PrenotifyKind"]


class PrenotifyKind(StrEnum):
    """Which receiving team the hospital should activate before arrival (院前预警)."""

    none = "none"
    chest_pain = "chest_pain"  # 胸痛中心: cath lab
    stroke = "stroke"  # 卒中中心: stroke team, CT
    trauma = "trauma"  # 创伤中心
    other = "other"


class Destination(CanonicalModel):
    """The receiving hospital (data of `destination.assigned`): for the whole incident,
    or for one patient when the event's `patient_ref` names one (casualties of one
    incident taken to different hospitals)."""

    hospital_code: Identifier  # organisation code of the hospital
    hospital_name: Name | None = None
    department_code: Code | None = None  # department code system 2.16.156.10011.2.3.2.62
    department_name: Name | None = None
    eta: AwareDatetime | None = None
    reason: Text | None = None  # e.g. nearest PCI-capable hospital
    prenotify: PrenotifyKind = PrenotifyKind.none


class Handover(CanonicalModel):
    """Care of one patient transferred to the hospital (data of `handover.completed`)."""

    patient_id: Identifier
    at: AwareDatetime  # NEMSIS eTimes.12
    hospital_code: Identifier
    receiving_clinician: Name | None = None
    notes: Text | None = None
