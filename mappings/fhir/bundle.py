"""Folded incident state -> FHIR R4 transaction Bundle, as plain dicts.

Every resource is keyed on a business identifier and written with a conditional update
(``PUT <Type>?identifier=<system>|<value>``), and its ``fullUrl`` is a uuid5 of that
key, so a retried or a later bundle of the same incident updates the same resources
instead of creating new ones. Each bundle is a full snapshot of what the incident knows
about its patient(s), so bundles may arrive in any order and the last one wins.

Keys (``<base>`` is the identifier base, ``<patient-key>`` the first id of the patient's
identity chain, i.e. its temporary id if it had one, so a temporary patient identified
later keeps the same resources):

- Organization: ``<base>source|<source>`` (the 120 center), destination hospital code;
  Practitioner: ``<base>staff|<staff id>``; Location (the scene): ``<base>scene|<incident>``.
  These are shared by every patient of the incident, on purpose.
- Patient: ``<base>patient|<patient-key>``.
- Encounter: ``<base>encounter|<incident>/<patient-key>``: one Encounter per patient per
  incident (mother and newborn, the casualties of a crash each have their own; ``/``
  cannot occur in a hub id, so the pair is unambiguous). The dispatch number
  (``<base>incident|<incident>``) and the hub's ePCR number (``<base>epcr|<incident>.
  <patient-key>``) are further, non-key identifiers: the EMR groups an incident's
  Encounters by the dispatch number. Before any patient is known there is no Encounter
  (nothing to chart; every later bundle carries the whole timeline anyway).
- Condition (the prehospital impression) and AllergyIntolerance: prefixed by the
  Encounter's ``<incident>/<patient-key>``: they are this encounter's findings, so a
  site that reuses patient ids across incidents (a master patient index) keeps each
  incident's own; vital-sign Observations: ``<patient-key>.<time>.<sign>``; ECG
  Observation and DocumentReference: the ECG id (ECGs belong to one patient).

Which patients a bundle covers: the event's patient (``patient_ref`` or
``data.patient_id``, resolved through identifications) when it is a known patient;
otherwise (the incident-wide events ``call.received``, ``unit.dispatched``,
``unit.status``, ``destination.assigned``, ``incident.cancelled``, or an event about a
patient not yet identified) every current patient of the incident, each with its own
Patient, Encounter and clinical resources, so an incident-wide change (status, ETA,
destination, cancellation) reaches every patient's Encounter. Every per-patient resource
references only its own patient's Patient and Encounter.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hub.model.clinical import Allergy, Assessment
from hub.model.ecg import Ecg
from hub.model.incident import UnitStatus
from hub.model.location import Address, CoordinateSystem, GeoPoint
from hub.model.patient import AgeUnit, Patient
from hub.model.state import IncidentState
from hub.model.vitals import VitalSigns
from mappings.fhir import systems as S
from mappings.tables import CodeTables

__all__ = ["ENTRY_NAMESPACE", "BundleBuilder", "build_bundle", "entry_uuid"]

ENTRY_NAMESPACE = uuid.UUID("6f1d8a52-6a43-5b0e-9d4c-2f6b1c0e7a11")
"""uuid5 namespace of entry fullUrls: uuid5(ENTRY_NAMESPACE, "<Type>|<system>|<value>")."""

_AGE_UNITS = {AgeUnit.year: "a", AgeUnit.month: "mo", AgeUnit.day: "d"}
# Fixes in these datums are WGS84 to within centimetres; GCJ-02 and BD-09 are shifted.
_WGS84_LIKE = frozenset({CoordinateSystem.wgs84, CoordinateSystem.cgcs2000})
_CARE_STARTED = (UnitStatus.patient_contact, UnitStatus.on_scene)


def entry_uuid(resource_type: str, system: str, value: str) -> str:
    """The deterministic fullUrl of the resource keyed on system|value."""
    return f"urn:uuid:{uuid.uuid5(ENTRY_NAMESPACE, f'{resource_type}|{system}|{value}')}"


def _num(value: float) -> int | float:
    """Integral values as JSON integers, so 52.0 is written 52."""
    return int(value) if float(value).is_integer() else value


def _time(value: dt.datetime) -> str:
    return value.isoformat()


def _stamp(value: dt.datetime) -> str:
    """A time as an identifier-safe UTC stamp: 20261125T001310Z."""
    return value.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _coding(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    coding = {"system": system, "code": code}
    if display:
        coding["display"] = display
    return coding


def _address(address: Address) -> dict[str, Any]:
    out: dict[str, Any] = {"text": address.text}
    line = [
        part
        for part in (address.township, address.community, address.road, address.building)
        if part
    ]
    if address.room:
        line.append(address.room)
    if line:
        out["line"] = line
    for key, value in (
        ("city", address.city),
        ("district", address.county),
        ("state", address.province),
    ):
        if value:
            out[key] = value
    out["country"] = "CN"
    return out


@dataclass(frozen=True, slots=True)
class EventRecords:
    """The clinical records one stream event brought: the only ones its bundle carries,
    for ``patient_id`` (the current id of the event's patient), in measured order."""

    patient_id: str
    samples: Sequence[VitalSigns] = ()
    ecgs: Sequence[Ecg] = ()


class BundleBuilder:
    """Builds one bundle; holds the per-call context (tables, identifier base, state)."""

    def __init__(
        self,
        state: IncidentState,
        *,
        source: str,
        tables: CodeTables,
        options: Mapping[str, Any],
        patient_id: str | None,
        records: EventRecords | None = None,
    ) -> None:
        self.state = state
        self.records = records  # None: every vital sign and ECG of the incident
        self.source = source
        self.tables = tables
        self.base = S.identifier_base(options)
        self.hospital_system = str(
            options.get("hospital_identifier_system", self.base + "hospital")
        )
        self.entries: list[dict[str, Any]] = []
        self.patients = self._pick_patients(patient_id)
        # The patient whose resources are being built (set per patient by build()).
        self.patient: Patient | None = None
        self.patient_key: str | None = None

    # ------------------------------------------------------------------ plumbing

    def system(self, kind: str) -> str:
        return self.base + kind

    def add(self, resource: dict[str, Any], system: str, value: str) -> str:
        """Append resource keyed on system|value; returns its fullUrl for references."""
        kind = str(resource["resourceType"])
        full_url = entry_uuid(kind, system, value)
        identifiers = resource.setdefault("identifier", [])
        key = {"system": system, "value": value}
        if isinstance(identifiers, list) and key not in identifiers:
            identifiers.insert(0, key)
        self.entries.append(
            {
                "fullUrl": full_url,
                "resource": resource,
                "request": {"method": "PUT", "url": f"{kind}?identifier={system}|{value}"},
            }
        )
        return full_url

    def _pick_patients(self, patient_id: str | None) -> list[Patient]:
        """The event's patient if it is known; else every current patient (module doc)."""
        patients = self.state.patients
        if patient_id is not None:
            current = self.state.resolve_patient_id(patient_id)
            if current in patients:
                return [patients[current]]
        return list(patients.values())

    def _root_id(self, patient_id: str) -> str:
        """The first id of a patient's identity chain (a temporary id, if it had one).

        Keying the Patient on it keeps one resource when a temporary patient is identified.
        """
        reverse = {new: old for old, new in self.state.patient_links.items()}
        seen = {patient_id}
        while (older := reverse.get(patient_id)) is not None and older not in seen:
            seen.add(older)
            patient_id = older
        return patient_id

    # ------------------------------------------------------------------ resources

    def build(self) -> list[dict[str, Any]]:
        center = self.organization_120()
        hospitals = self.organization_hospitals()
        crew = self.practitioners()
        scene = self.scene_location(center)
        for current in self.patients:
            self.patient = current
            self.patient_key = self._root_id(current.patient_id)
            patient = self.patient_resource(center)
            destination = self.state.destination_for(current.patient_id)
            hospital = hospitals.get(destination.hospital_code) if destination else None
            encounter = self.encounter(center, hospital, crew, scene, patient)
            key = current.patient_id
            assessment = self.state.assessments.get(key)
            if assessment is not None:
                self.condition(assessment, patient, encounter)
                for allergy in assessment.allergies:
                    self.allergy(allergy, assessment, patient, encounter)
                self.assessment_observations(assessment, patient, encounter, center)
            for sample in self._samples(key):
                self.vital_observations(sample, patient, encounter, center)
            for ecg in self._ecgs(key):
                self.ecg(ecg, patient, encounter, center)
        self.patient = self.patient_key = None
        return self.entries

    def _samples(self, patient_id: str) -> Sequence[VitalSigns]:
        if self.records is None:
            return self.state.vitals.get(patient_id, [])
        return self.records.samples if patient_id == self.records.patient_id else ()

    def _ecgs(self, patient_id: str) -> Sequence[Ecg]:
        if self.records is None:
            return self.state.ecgs.get(patient_id, [])
        return self.records.ecgs if patient_id == self.records.patient_id else ()

    def organization_120(self) -> str:
        system = self.system("source")
        resource = {
            "resourceType": "Organization",
            "active": True,
            "name": self.source,
            "type": [{"text": "120 急救中心"}],
        }
        return self.add(resource, system, self.source)

    def organization_hospitals(self) -> dict[str, str]:
        """An Organization per hospital the patients go to (the incident's, when no
        patient is known yet): fullUrls by hospital code."""
        state = self.state
        chosen = [state.destination_for(p.patient_id) for p in self.patients]
        if not self.patients:
            chosen = [state.destination]
        out: dict[str, str] = {}
        for destination in chosen:
            if destination is None or destination.hospital_code in out:
                continue
            resource: dict[str, Any] = {"resourceType": "Organization", "active": True}
            if destination.hospital_name:
                resource["name"] = destination.hospital_name
            code = destination.hospital_code
            out[code] = self.add(resource, self.hospital_system, code)
        return out

    def practitioners(self) -> list[tuple[str, str | None]]:
        crew: list[tuple[str, str | None]] = []
        seen: set[str] = set()
        for unit in sorted(self.state.units.values(), key=lambda u: (u.dispatched_at, u.unit_id)):
            for member in unit.crew:
                if member.staff_id in seen:
                    continue
                seen.add(member.staff_id)
                resource: dict[str, Any] = {"resourceType": "Practitioner", "active": True}
                if member.name:
                    resource["name"] = [{"text": member.name}]
                full_url = self.add(resource, self.system("staff"), member.staff_id)
                crew.append((full_url, member.role.value if member.role else None))
        return crew

    def _scene_position(self) -> GeoPoint | None:
        """A WGS84 fix of the scene: FHIR Location.position is WGS84 by definition."""
        call = self.state.call
        if call is not None and call.location is not None and call.location.crs in _WGS84_LIKE:
            return call.location
        for change in self.state.timeline:
            if (
                change.status in (UnitStatus.on_scene, UnitStatus.patient_contact)
                and change.position is not None
                and change.position.crs in _WGS84_LIKE
            ):
                return change.position
        return None

    def scene_location(self, center: str) -> str | None:
        call = self.state.call
        incident_id = self.state.incident_id
        if incident_id is None:
            return None
        resource: dict[str, Any] = {
            "resourceType": "Location",
            "status": "active",
            "mode": "instance",
            "name": f"现场 {incident_id}",
            "description": "院前急救现场 (incident scene)",
            "managingOrganization": {"reference": center},
        }
        if call is not None and call.address is not None:
            resource["address"] = _address(call.address)
            if call.address.standard_address_code:
                resource["identifier"] = [
                    {
                        "system": self.system("standard-address"),
                        "value": call.address.standard_address_code,
                    }
                ]
        position = self._scene_position()
        if position is not None:
            resource["position"] = {"longitude": position.lon, "latitude": position.lat}
        if call is None and position is None:
            return None
        return self.add(resource, self.system("scene"), incident_id)

    def patient_resource(self, center: str) -> str:
        patient = self.patient
        assert patient is not None and self.patient_key is not None
        identifiers: list[dict[str, Any]] = []
        if patient.patient_id != self.patient_key:
            identifiers.append({"system": self.system("patient"), "value": patient.patient_id})
        if patient.resident_id:
            identifiers.append(
                {
                    "use": "official",
                    "type": {"text": "居民身份证"},
                    "system": S.OID_RESIDENT_ID,
                    "value": patient.resident_id,
                }
            )
        if patient.passport_no and patient.passport_no[:1].upper() in ("E", "G"):
            identifiers.append({"system": S.OID_PASSPORT_CHN, "value": patient.passport_no})
        resource: dict[str, Any] = {
            "resourceType": "Patient",
            "meta": {"profile": [S.PROFILE_PATIENT]},
            "identifier": identifiers,
            "active": True,
            "gender": self.tables.require("sex_fhir_gender", patient.sex.value),
            "managingOrganization": {"reference": center},
        }
        sex_display = self.tables.get("sex_display", patient.sex.value)
        resource["extension"] = []
        if patient.name:
            resource["name"] = [{"use": "official", "text": patient.name}]
        birth_date = patient.birth_date or patient.birth_date_from_id
        if birth_date is not None:
            resource["birthDate"] = birth_date.isoformat()
        elif patient.estimated_age is not None:
            age = patient.estimated_age
            unit = _AGE_UNITS[age.unit]
            resource["extension"].append(
                {
                    "url": S.EXT_ESTIMATED_AGE,
                    "valueAge": {"value": age.value, "unit": unit, "system": S.UCUM, "code": unit},
                }
            )
        # GB/T 2261.1 sex beside the FHIR gender, for Chinese receivers.
        resource["_gender"] = {
            "extension": [
                {
                    "url": S.PROFILE_BASE + "gb-t-2261-1-sex",
                    "valueCoding": _coding(S.OID_SEX, patient.sex.value, sex_display),
                }
            ]
        }
        if not resource["extension"]:
            del resource["extension"]
        if patient.phone:
            resource["telecom"] = [{"system": "phone", "value": patient.phone, "use": "mobile"}]
        if patient.address is not None:
            resource["address"] = [_address(patient.address)]
        contacts = []
        for contact in patient.emergency_contacts:
            item: dict[str, Any] = {"telecom": [{"system": "phone", "value": contact.phone}]}
            if contact.relationship:
                item["relationship"] = [{"text": contact.relationship}]
            if contact.name:
                item["name"] = {"text": contact.name}
            contacts.append(item)
        if contacts:
            resource["contact"] = contacts
        return self.add(resource, self.system("patient"), self.patient_key)

    def encounter_status(self) -> str:
        state = self.state
        if state.cancelled is not None:
            return "cancelled"
        if self.patient is not None and self.patient.patient_id in state.handovers:
            return "finished"
        if not state.timeline:
            return "planned"
        return self.tables.require("encounter_status", state.timeline[-1].status.value)

    def _status_history(self) -> list[dict[str, Any]]:
        segments: list[tuple[str, dt.datetime]] = []
        for change in self.state.timeline:
            status = self.tables.require("encounter_status", change.status.value)
            if not segments or segments[-1][0] != status:
                segments.append((status, change.at))
        history = []
        for index, (status, start) in enumerate(segments):
            period = {"start": _time(start)}
            if index + 1 < len(segments):
                period["end"] = _time(segments[index + 1][1])
            history.append({"status": status, "period": period})
        return history

    def encounter(
        self,
        center: str,
        hospital: str | None,
        crew: list[tuple[str, str | None]],
        scene: str | None,
        patient: str,
    ) -> str:
        """The Encounter of the current patient in this incident (keys: module doc)."""
        state = self.state
        assert self.patient_key is not None
        incident_id = state.incident_id or "unknown"
        status = self.encounter_status()
        identifiers: list[dict[str, Any]] = [
            {
                "system": self.system("incident"),
                "value": incident_id,
                "assigner": {"reference": center},
            },
            {"system": self.system("epcr"), "value": f"{incident_id}.{self.patient_key}"},
        ]
        resource: dict[str, Any] = {
            "resourceType": "Encounter",
            "meta": {"profile": [S.PROFILE_ENCOUNTER]},
            "identifier": identifiers,
            "status": status,
            "class": _coding(
                S.V3_ACT_CODE,
                self.tables.require("patient_class", "fhir:emergency"),
                "emergency",
            ),
            "extension": [
                {
                    "url": S.EXT_MODE_OF_ARRIVAL,
                    "valueCoding": _coding(
                        S.V2_0430, self.tables.require("mode_of_arrival", "ambulance"), "Ambulance"
                    ),
                }
            ],
        }
        assert self.patient is not None
        destination = state.destination_for(self.patient.patient_id)
        if destination is not None and destination.eta is not None and status == "planned":
            resource["extension"].append(
                {"url": S.EXT_PLANNED_START, "valueDateTime": _time(destination.eta)}
            )
        history = self._status_history()
        if history:
            resource["statusHistory"] = history
        assessment = state.assessments.get(self.patient.patient_id) if self.patient else None
        if assessment is not None and assessment.triage_level is not None:
            priority = self.tables.get("triage_priority", assessment.triage_level.value)
            if priority:
                resource["priority"] = {
                    "coding": [_coding(S.V3_ACT_PRIORITY, priority)],
                    "text": f"分级 {assessment.triage_level.value}",
                }
        resource["subject"] = {"reference": patient}
        if crew:
            resource["participant"] = [
                {"individual": {"reference": ref}, **({"type": [{"text": role}]} if role else {})}
                for ref, role in crew
            ]
        start = next(
            (state.status_times[s] for s in _CARE_STARTED if s in state.status_times), None
        )
        handover = state.handovers.get(self.patient.patient_id) if self.patient else None
        end = handover.at if handover is not None else state.status_times.get(UnitStatus.handover)
        if start is not None:
            resource["period"] = {"start": _time(start)}
            if end is not None:
                resource["period"]["end"] = _time(end)
        if assessment is not None and assessment.chief_complaint:
            resource["reasonCode"] = [{"text": assessment.chief_complaint}]
        hospitalization: dict[str, Any] = {}
        if scene is not None:
            hospitalization["origin"] = {"reference": scene}
        if destination is not None and destination.prenotify.value != "none":
            hospitalization["specialArrangement"] = [
                {"text": f"院前预警 {destination.prenotify.value}"}
            ]
        if hospitalization:
            resource["hospitalization"] = hospitalization
        if hospital is not None:
            resource["serviceProvider"] = {"reference": hospital}
        # One Encounter per patient per incident: the dispatch number alone is not a key
        # (a second patient's bundle would take over the first one's Encounter).
        return self.add(resource, self.system("encounter"), self.encounter_key())

    def encounter_key(self) -> str:
        """``<incident>/<patient-key>``: the Encounter, and the prefix of what belongs to it."""
        assert self.patient_key is not None
        return f"{self.state.incident_id or 'unknown'}/{self.patient_key}"

    def condition(self, assessment: Assessment, patient: str, encounter: str) -> None:
        if not assessment.impression and not assessment.impression_code:
            return
        code: dict[str, Any] = {}
        if assessment.impression_code:
            code["coding"] = [_coding(S.ICD10, assessment.impression_code)]
        if assessment.impression:
            code["text"] = assessment.impression
        resource: dict[str, Any] = {
            "resourceType": "Condition",
            "clinicalStatus": {"coding": [_coding(S.CONDITION_CLINICAL, "active")]},
            "verificationStatus": {"coding": [_coding(S.CONDITION_VERIFICATION, "provisional")]},
            "category": [
                {"coding": [_coding(S.CONDITION_CATEGORY, "encounter-diagnosis")]},
            ],
            "code": code,
            "subject": {"reference": patient},
            "encounter": {"reference": encounter},
            "recordedDate": _time(assessment.assessed_at),
        }
        if assessment.onset_at is not None:
            resource["onsetDateTime"] = _time(assessment.onset_at)
        self.add(resource, self.system("impression"), f"{self.encounter_key()}.impression")

    def allergy(
        self, allergy: Allergy, assessment: Assessment, patient: str, encounter: str
    ) -> None:
        resource: dict[str, Any] = {
            "resourceType": "AllergyIntolerance",
            "clinicalStatus": {"coding": [_coding(S.ALLERGY_CLINICAL, "active")]},
            "verificationStatus": {"coding": [_coding(S.ALLERGY_VERIFICATION, "unconfirmed")]},
            "type": "allergy",
            "code": {"text": allergy.substance},
            "patient": {"reference": patient},
            "encounter": {"reference": encounter},
            "recordedDate": _time(assessment.assessed_at),
        }
        if allergy.category is not None:
            resource["category"] = [allergy.category.value]
        if allergy.severity is not None:
            criticality = self.tables.get("allergy_severity", allergy.severity.value)
            if criticality:
                resource["criticality"] = criticality
        if allergy.reaction:
            reaction: dict[str, Any] = {"manifestation": [{"text": allergy.reaction}]}
            if allergy.severity is not None:
                reaction["severity"] = allergy.severity.value
            resource["reaction"] = [reaction]
        value = f"{self.encounter_key()}.{_digest(allergy.substance)}"
        self.add(resource, self.system("allergy"), value)

    # ------------------------------------------------------------------ observations

    def _vital_code(self, field: str) -> dict[str, Any]:
        codings = [
            _coding(
                S.LOINC,
                self.tables.require("vital_loinc", field),
                self.tables.get("vital_display", field),
            )
        ]
        if field == "spo2":
            codings.append(
                _coding(
                    S.LOINC,
                    self.tables.require("vital_loinc", "spo2_pulse_oximetry"),
                    self.tables.get("vital_display", "spo2_pulse_oximetry"),
                )
            )
        ws363 = self.tables.get("vital_ws363", field)
        if ws363:
            codings.append(_coding(S.OID_WS363, ws363))
        return {"coding": codings, "text": self.tables.get("vital_display", field) or field}

    def _quantity(self, field: str, value: float) -> dict[str, Any]:
        unit = self.tables.require("vital_ucum", field)
        return {"value": _num(value), "unit": unit, "system": S.UCUM, "code": unit}

    def _observation(
        self,
        field: str,
        at: dt.datetime,
        patient: str,
        encounter: str,
        performer: str,
        body: dict[str, Any],
    ) -> None:
        resource: dict[str, Any] = {
            "resourceType": "Observation",
            "meta": {"profile": [S.PROFILE_VITAL_SIGNS]},
            "status": "final",
            "category": [
                {
                    "coding": [
                        _coding(S.OBSERVATION_CATEGORY, "vital-signs", "Vital Signs"),
                    ]
                }
            ],
            "code": self._vital_code(field),
            "subject": {"reference": patient},
            "encounter": {"reference": encounter},
            "effectiveDateTime": _time(at),
            "performer": [{"reference": performer}],
            **body,
        }
        value = f"{self.patient_key}.{_stamp(at)}.{field}"
        self.add(resource, self.system("observation"), value)

    def vital_observations(
        self, sample: VitalSigns, patient: str, encounter: str, performer: str
    ) -> None:
        values = sample.present_values()
        systolic = values.pop("systolic_bp", None)
        diastolic = values.pop("diastolic_bp", None)
        for field, value in values.items():
            body = {"valueQuantity": self._quantity(field, value)}
            self._observation(field, sample.measured_at, patient, encounter, performer, body)
        if systolic is not None or diastolic is not None:
            components = [
                {"code": self._vital_code(field), "valueQuantity": self._quantity(field, value)}
                for field, value in (("systolic_bp", systolic), ("diastolic_bp", diastolic))
                if value is not None
            ]
            self._observation(
                "blood_pressure",
                sample.measured_at,
                patient,
                encounter,
                performer,
                {"component": components},
            )

    def assessment_observations(
        self, assessment: Assessment, patient: str, encounter: str, performer: str
    ) -> None:
        at = assessment.assessed_at
        if assessment.gcs is not None:
            gcs = assessment.gcs
            components = [
                {"code": self._vital_code(field), "valueQuantity": self._quantity(field, value)}
                for field, value in (
                    ("gcs_eye", gcs.eye),
                    ("gcs_verbal", gcs.verbal),
                    ("gcs_motor", gcs.motor),
                )
            ]
            body = {
                "valueQuantity": self._quantity("gcs_total", gcs.total),
                "component": components,
            }
            self._observation("gcs_total", at, patient, encounter, performer, body)
        if assessment.pain_score is not None:
            body = {"valueQuantity": self._quantity("pain", assessment.pain_score)}
            self._observation("pain", at, patient, encounter, performer, body)

    def ecg(self, ecg: Ecg, patient: str, encounter: str, performer: str) -> None:
        document_ref: str | None = None
        if ecg.document is not None:
            attachment: dict[str, Any] = {"contentType": ecg.document.content_type}
            if ecg.document.url is not None:
                attachment["url"] = ecg.document.url
            if ecg.document.data_base64 is not None:
                attachment["data"] = ecg.document.data_base64
            attachment["title"] = f"12导联心电图 {ecg.ecg_id}"
            document: dict[str, Any] = {
                "resourceType": "DocumentReference",
                "status": "current",
                "type": {"coding": [_coding(S.LOINC, "34534-8", "12 lead EKG panel")]},
                "subject": {"reference": patient},
                "date": _time(ecg.transmitted_at or ecg.acquired_at),
                "content": [{"attachment": attachment}],
                "context": {"encounter": [{"reference": encounter}]},
            }
            document_ref = self.add(document, self.system("ecg-document"), ecg.ecg_id)
        resource: dict[str, Any] = {
            "resourceType": "Observation",
            "status": "final",
            "category": [{"coding": [_coding(S.OBSERVATION_CATEGORY, "procedure")]}],
            "code": {
                "coding": [
                    _coding(S.MDC, "131328", "MDC_ECG_ELEC_POTL"),
                    _coding(S.LOINC, "34534-8", "12 lead EKG panel"),
                ],
                "text": "12导联心电图",
            },
            "subject": {"reference": patient},
            "encounter": {"reference": encounter},
            "effectiveDateTime": _time(ecg.acquired_at),
            "performer": [{"reference": performer}],
        }
        if ecg.transmitted_at is not None:
            resource["issued"] = _time(ecg.transmitted_at)
        notes = []
        if ecg.interpretation:
            notes.append({"text": ecg.interpretation})
        if ecg.stemi_suspected is not None:
            notes.append(
                {"text": "STEMI suspected" if ecg.stemi_suspected else "STEMI not suspected"}
            )
        if notes:
            resource["note"] = notes
        if ecg.waveforms:
            resource["component"] = [
                {
                    "code": {
                        "coding": [
                            _coding(
                                S.MDC,
                                self.tables.require("ecg_lead_mdc", waveform.lead.value),
                                f"MDC_ECG_LEAD_{waveform.lead.value}",
                            )
                        ],
                        "text": f"Lead {waveform.lead.value}",
                    },
                    "valueSampledData": {
                        "origin": {
                            "value": _num(waveform.origin),
                            "unit": waveform.unit,
                            "system": S.UCUM,
                            "code": waveform.unit,
                        },
                        "period": _num(1000.0 / waveform.sample_rate_hz),
                        "factor": _num(waveform.factor),
                        "dimensions": 1,
                        "data": " ".join(str(sample) for sample in waveform.data),
                    },
                }
                for waveform in ecg.waveforms
            ]
        if document_ref is not None:
            resource["derivedFrom"] = [{"reference": document_ref}]
        self.add(resource, self.system("ecg"), ecg.ecg_id)


def build_bundle(
    state: IncidentState,
    *,
    message_id: str,
    created_at: dt.datetime,
    source: str,
    tables: CodeTables,
    options: Mapping[str, Any],
    patient_id: str | None = None,
    records: EventRecords | None = None,
) -> dict[str, Any]:
    """The transaction Bundle of the incident as it stands, for patient_id's patient.

    When patient_id is None or not a known patient: for every patient of the incident.
    ``records``: of the vital signs and ECGs, only these (None: all of them).
    """
    builder = BundleBuilder(
        state,
        source=source,
        tables=tables,
        options=options,
        patient_id=patient_id,
        records=records,
    )
    return {
        "resourceType": "Bundle",
        "id": message_id,
        "meta": {"profile": [S.PROFILE_BUNDLE]},
        "type": "transaction",
        "timestamp": _time(created_at),
        "entry": builder.build(),
    }
