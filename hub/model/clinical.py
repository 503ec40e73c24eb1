"""What the crew found and did: assessment, scores, allergies and treatments."""

from enum import StrEnum
from typing import Annotated

from pydantic import AwareDatetime, Field

from hub.model.base import CanonicalModel, Code, Identifier, Name, Text

__all__ = [
    "ICD10_PATTERN",
    "Allergy",
    "AllergyCategory",
    "AllergySeverity",
    "Assessment",
    "BeFast",
    "Gcs",
    "Quantity",
    "Treatment",
    "TreatmentKind",
    "TriageLevel",
]

ICD10_PATTERN = r"^[A-Z][0-9]{2}(\.[0-9A-Za-z]{1,10})?$"
"""ICD-10 code, including the Chinese national clinical extensions such as I21.900x001."""


class TriageLevel(StrEnum):
    """Four-level emergency triage used by Chinese emergency departments."""

    I = "I"  # noqa: E741  濒危: immediate
    II = "II"  # 危重: within 10 min
    III = "III"  # 急症: within 30 min
    IV = "IV"  # 非急症: within 1 h


class Gcs(CanonicalModel):
    """Glasgow Coma Scale components."""

    eye: Annotated[int, Field(ge=1, le=4)]
    verbal: Annotated[int, Field(ge=1, le=5)]
    motor: Annotated[int, Field(ge=1, le=6)]

    @property
    def total(self) -> int:
        """GCS total, 3..15 (a plain property: not part of the wire format)."""
        return self.eye + self.verbal + self.motor


class BeFast(CanonicalModel):
    """BE-FAST stroke screen; each flag is True when the sign is present."""

    balance: bool
    eyes: bool
    face: bool
    arm: bool
    speech: bool
    time_last_known_well: AwareDatetime | None = None  # LKW, drives the thrombolysis window

    @property
    def positive(self) -> bool:
        """True when any sign is present (a plain property: not part of the wire format)."""
        return self.balance or self.eyes or self.face or self.arm or self.speech


class AllergyCategory(StrEnum):
    medication = "medication"
    food = "food"
    environment = "environment"
    biologic = "biologic"


class AllergySeverity(StrEnum):
    mild = "mild"
    moderate = "moderate"
    severe = "severe"


class Allergy(CanonicalModel):
    substance: Name
    category: AllergyCategory | None = None
    severity: AllergySeverity | None = None
    reaction: Text | None = None


class Assessment(CanonicalModel):
    """The crew's current assessment of one patient (data of `assessment.updated`)."""

    patient_id: Identifier
    assessed_at: AwareDatetime
    chief_complaint: Text | None = None  # 主诉
    triage_level: TriageLevel | None = None
    gcs: Gcs | None = None
    be_fast: BeFast | None = None
    pain_score: Annotated[int, Field(ge=0, le=10)] | None = None  # NRS 0-10
    impression: Text | None = None  # 初步诊断, provisional impression
    impression_code: Annotated[str, Field(pattern=ICD10_PATTERN)] | None = None
    onset_at: AwareDatetime | None = None  # 发病时间, symptom onset
    allergies: list[Allergy] = Field(default_factory=list)


class Quantity(CanonicalModel):
    """A measured amount with its UCUM unit, e.g. 300 mg."""

    value: float
    unit: Annotated[str, Field(min_length=1, max_length=32)]  # UCUM code


class TreatmentKind(StrEnum):
    medication = "medication"
    procedure = "procedure"
    oxygen = "oxygen"
    defibrillation = "defibrillation"
    cpr = "cpr"
    iv_access = "iv_access"
    other = "other"


class Treatment(CanonicalModel):
    """One intervention (data of `treatment.given`)."""

    patient_id: Identifier
    given_at: AwareDatetime
    kind: TreatmentKind
    code: Code | None = None  # local drug or procedure code
    text: Text
    dose: Quantity | None = None
    route: Name | None = None  # e.g. PO, IV, inhalation
