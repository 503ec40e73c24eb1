"""The fhir-r4-transaction mapping: codes, identifiers, references, determinism, status."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
import pytest

from hub.model.events import EcgAcquired, VitalsRecordedEvent
from hub.model.vitals import VITAL_SIGN_CODES, WS363_VITAL_CODES
from hub.registry import lookup
from hub.testing.examples import EXAMPLE_RESIDENT_ID, example_events
from mappings.base import MappingContext, MappingError
from mappings.fhir import CONTENT_TYPE, entry_uuid, fhir_r4_transaction, incident_bundle
from mappings.fhir.bundle import EventRecords, build_bundle
from mappings.fhir.profile_check import validate_fhir
from mappings.fhir.validation import validate_bundle
from mappings.incident import event_patient_id, events_through, fold_through, incident_source
from mappings.tables import BUILTIN_TABLES

CREATED = dt.datetime(2026, 11, 25, 0, 50, tzinfo=dt.UTC)
BASE = "https://prehospital-hub.example/id/"


def bundle_at(number: int, **options: Any) -> dict[str, Any]:
    """The bundle for event number (1-based) of the example, as the worker would map it."""
    events = example_events()
    ctx = MappingContext(
        message_id=f"MSG-{number}",
        created_at=CREATED,
        destination="emr",
        options=options,
        incident_events=tuple(events[:number]),
    )
    return incident_bundle(events[number - 1], ctx)


def resources(bundle: Mapping[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind]


def observation(bundle: Mapping[str, Any], loinc: str) -> list[dict[str, Any]]:
    return [
        r
        for r in resources(bundle, "Observation")
        if any(c["code"] == loinc for c in r["code"]["coding"])
    ]


def test_registered_with_incident_flag() -> None:
    function = lookup("mapping", "fhir-r4-transaction")
    assert function is fhir_r4_transaction
    assert function.needs_incident is True


def test_payload_is_sorted_fhir_json_with_stable_bundle_id() -> None:
    events = example_events()
    ctx = MappingContext("MSG-9", CREATED, "emr", incident_events=tuple(events[:9]))
    payload = fhir_r4_transaction(events[8], ctx)
    assert payload.content_type == CONTENT_TYPE == "application/fhir+json"
    document = orjson.loads(payload.body)
    assert document["id"] == "MSG-9"
    assert document["type"] == "transaction"
    assert document["timestamp"] == "2026-11-25T00:50:00+00:00"
    assert payload.body == orjson.dumps(document, option=orjson.OPT_SORT_KEYS)


def test_same_input_gives_same_bytes() -> None:
    events = example_events()
    ctx = MappingContext("MSG-14", CREATED, "emr", incident_events=tuple(events[:14]))
    assert fhir_r4_transaction(events[13], ctx) == fhir_r4_transaction(events[13], ctx)


def test_event_not_yet_in_history_is_added_and_later_events_ignored() -> None:
    events = example_events()
    without = MappingContext("M", CREATED, "emr", incident_events=tuple(events[:5]))
    with_later = MappingContext("M", CREATED, "emr", incident_events=tuple(events))
    assert incident_bundle(events[5], without) == incident_bundle(events[5], with_later)


def test_every_entry_is_a_conditional_put_with_deterministic_full_url() -> None:
    bundle = bundle_at(14)
    for entry in bundle["entry"]:
        resource, request = entry["resource"], entry["request"]
        assert request["method"] == "PUT"
        kind, _, query = request["url"].partition("?identifier=")
        assert kind == resource["resourceType"]
        system, _, value = query.partition("|")
        assert {"system": system, "value": value} in [
            {"system": i["system"], "value": i["value"]} for i in resource["identifier"]
        ]
        assert entry["fullUrl"] == entry_uuid(kind, system, value)
    full_urls = [e["fullUrl"] for e in bundle["entry"]]
    assert len(full_urls) == len(set(full_urls))


def test_references_resolve_inside_the_bundle() -> None:
    bundle = bundle_at(14)
    full_urls = {e["fullUrl"] for e in bundle["entry"]}

    def refs(node: Any) -> list[str]:
        if isinstance(node, dict):
            found = [node["reference"]] if isinstance(node.get("reference"), str) else []
            return found + [r for v in node.values() for r in refs(v)]
        if isinstance(node, list):
            return [r for v in node for r in refs(v)]
        return []

    references = refs(bundle["entry"])
    assert references
    assert set(references) <= full_urls


def test_patient_identifiers_gender_and_birth_date() -> None:
    (patient,) = resources(bundle_at(6), "Patient")
    systems = {i["system"]: i["value"] for i in patient["identifier"]}
    assert systems["urn:oid:2.16.156.10011.1.3"] == EXAMPLE_RESIDENT_ID
    assert systems[BASE + "patient"] == "PAT-20261125-0001"
    assert patient["gender"] == "male"
    assert patient["birthDate"] == "1958-03-12"
    assert patient["name"] == [{"use": "official", "text": "王建国"}]
    assert patient["telecom"][0]["value"] == "13820000001"
    ext = patient["_gender"]["extension"][0]["valueCoding"]
    assert ext == {"system": "urn:oid:2.16.156.10011.2.3.3.4", "code": "1", "display": "男性"}


def test_estimated_age_extension_when_no_birth_date() -> None:
    events = example_events()
    data = events[5]["data"]
    for key in ("birth_date", "resident_id"):
        del data[key]
    data["estimated_age"] = {"value": 70, "unit": "year"}
    ctx = MappingContext("M", CREATED, "emr", incident_events=tuple(events[:6]))
    (patient,) = resources(incident_bundle(events[5], ctx), "Patient")
    assert "birthDate" not in patient
    (age,) = [e for e in patient["extension"] if e["url"].endswith("estimated-age")]
    assert age["valueAge"] == {
        "value": 70,
        "unit": "a",
        "system": "http://unitsofmeasure.org",
        "code": "a",
    }


def test_code_overrides_change_a_table_entry() -> None:
    (patient,) = resources(
        bundle_at(6, code_overrides={"sex_fhir_gender": {"1": "other"}}), "Patient"
    )
    assert patient["gender"] == "other"
    with pytest.raises(MappingError, match="no code table"):
        bundle_at(6, code_overrides={"no_such_table": {"1": "x"}})


def test_identifier_base_option() -> None:
    bundle = bundle_at(6, identifier_base="urn:example:hub")
    (patient,) = resources(bundle, "Patient")
    assert {"system": "urn:example:hub/patient", "value": "PAT-20261125-0001"} in patient[
        "identifier"
    ]


@pytest.mark.parametrize(
    ("number", "status"),
    [
        (2, "planned"),
        (3, "planned"),
        (4, "in-progress"),
        (13, "in-progress"),
        (14, "finished"),
        (17, "cancelled"),
    ],
)
def test_encounter_status_follows_the_timeline(number: int, status: str) -> None:
    events = example_events()
    if number < 6:  # the example identifies its patient at event 6: identify it first
        events = [events[0], events[5], *events[1:5]]
        number += 1
    ctx = MappingContext("M", CREATED, "emr", incident_events=tuple(events[:number]))
    (encounter,) = resources(incident_bundle(events[number - 1], ctx), "Encounter")
    assert encounter["status"] == status


def test_encounter_class_arrival_history_and_identifiers() -> None:
    (encounter,) = resources(bundle_at(15), "Encounter")
    assert encounter["class"]["code"] == "EMER"
    assert encounter["class"]["system"] == "http://terminology.hl7.org/CodeSystem/v3-ActCode"
    (arrival,) = [e for e in encounter["extension"] if e["url"].endswith("modeOfArrival")]
    assert arrival["valueCoding"]["code"] == "A"
    assert [h["status"] for h in encounter["statusHistory"]] == [
        "planned",
        "in-progress",
        "finished",
    ]
    key = {"system": BASE + "encounter", "value": "INC-20261125-0001/PAT-20261125-0001"}
    assert encounter["identifier"][0] == key
    systems = {i["system"]: i["value"] for i in encounter["identifier"]}
    assert systems[BASE + "incident"] == "INC-20261125-0001"
    assert systems[BASE + "epcr"] == "INC-20261125-0001.PAT-20261125-0001"
    (entry,) = [e for e in bundle_at(15)["entry"] if e["resource"]["resourceType"] == "Encounter"]
    assert entry["request"]["url"] == f"Encounter?identifier={key['system']}|{key['value']}"
    assert encounter["period"] == {
        "start": "2026-11-25T08:12:30+08:00",  # first medical contact
        "end": "2026-11-25T08:47:00+08:00",
    }
    assert encounter["hospitalization"]["origin"]["reference"].startswith("urn:uuid:")


def test_planned_encounter_carries_the_eta() -> None:
    events = example_events()[:11]
    # Destination assigned while the unit is still on its way to the scene.
    events = [e for e in events if e["type"] != "unit.status" or e["data"]["status"] == "en_route"]
    ctx = MappingContext("M", CREATED, "emr", incident_events=tuple(events))
    (encounter,) = resources(incident_bundle(events[-1], ctx), "Encounter")
    assert encounter["status"] == "planned"
    (eta,) = [e for e in encounter["extension"] if e["url"].endswith("plannedStartDate")]
    assert eta["valueDateTime"] == "2026-11-25T08:44:00+08:00"


def test_vital_sign_codes_units_and_ws363() -> None:
    bundle = bundle_at(9)
    for field, (loinc, ucum) in VITAL_SIGN_CODES.items():
        if field in ("systolic_bp", "diastolic_bp"):
            continue
        found = observation(bundle, loinc)
        assert found, field
        assert found[0]["valueQuantity"]["code"] == ucum
        assert found[0]["category"][0]["coding"][0]["code"] == "vital-signs"
        ws = WS363_VITAL_CODES.get(field)
        if ws:
            assert {"system": "urn:oid:2.16.156.10011.2.2.1", "code": ws} in found[0]["code"][
                "coding"
            ]
    (spo2, _) = observation(bundle, "2708-6")
    assert [c["code"] for c in spo2["code"]["coding"]] == ["2708-6", "59408-5"]
    (glucose,) = observation(bundle, "14743-9")
    assert glucose["valueQuantity"]["unit"] == "mmol/L"


def test_blood_pressure_panel_and_gcs() -> None:
    bundle = bundle_at(9)
    first, _second = observation(bundle, "85354-9")
    assert [c["code"]["coding"][0]["code"] for c in first["component"]] == ["8480-6", "8462-4"]
    assert first["component"][0]["valueQuantity"]["value"] == 98
    (gcs,) = observation(bundle, "9269-2")
    assert gcs["valueQuantity"]["value"] == 15
    assert [c["code"]["coding"][0]["code"] for c in gcs["component"]] == [
        "9267-6",
        "9270-0",
        "9268-4",
    ]
    (pain,) = observation(bundle, "72514-3")
    assert pain["valueQuantity"]["value"] == 8


def test_vitals_table_agrees_with_the_model() -> None:
    loinc = BUILTIN_TABLES.table("vital_loinc")
    ucum = BUILTIN_TABLES.table("vital_ucum")
    for field, coding in VITAL_SIGN_CODES.items():
        assert (loinc[field], ucum[field]) == (coding.loinc, coding.ucum)
    assert dict(WS363_VITAL_CODES) == dict(BUILTIN_TABLES.table("vital_ws363"))


def test_ecg_waveforms_and_document() -> None:
    bundle = bundle_at(8)
    (ecg,) = observation(bundle, "131328")
    assert ecg["code"]["coding"][0]["system"] == "urn:oid:2.16.840.1.113883.6.24"
    leads = [c["code"]["coding"][0]["code"] for c in ecg["component"]]
    assert leads == ["131330", "131389", "131392"]
    sampled = ecg["component"][0]["valueSampledData"]
    assert sampled["period"] == 2
    assert sampled["factor"] == 4.88
    assert sampled["dimensions"] == 1
    assert sampled["data"] == "0 12 41 205 61 60 62 65 30 2"
    (document,) = resources(bundle, "DocumentReference")
    assert document["content"][0]["attachment"]["contentType"] == "application/pdf"
    full_url = next(e["fullUrl"] for e in bundle["entry"] if e["resource"] is document)
    assert ecg["derivedFrom"] == [{"reference": full_url}]


def test_condition_allergy_location_organizations_practitioners() -> None:
    bundle = bundle_at(14)
    (condition,) = resources(bundle, "Condition")
    assert condition["code"]["coding"][0]["code"] == "I21.1"
    (allergy,) = resources(bundle, "AllergyIntolerance")
    assert allergy["code"]["text"] == "青霉素"
    assert allergy["category"] == ["medication"]
    (scene,) = resources(bundle, "Location")
    assert scene["address"]["district"] == "河北区"
    assert scene["position"] == {"longitude": 117.1945, "latitude": 39.1576}  # the WGS84 fix
    names = sorted(o.get("name") for o in resources(bundle, "Organization"))
    assert names == ["dispatch-tianjin", "河北区示范医院"]
    assert len(resources(bundle, "Practitioner")) == 3


def test_before_the_patient_is_known_there_is_no_patient_and_no_encounter() -> None:
    # An Encounter keyed on the incident alone would be an orphan (or, worse, shared by
    # the patients); every later bundle carries the whole timeline anyway.
    for number in range(1, 6):
        bundle = bundle_at(number)
        assert not resources(bundle, "Patient"), number
        assert not resources(bundle, "Encounter"), number
        assert resources(bundle, "Organization"), number


def test_temporary_patient_keeps_one_patient_key_when_identified() -> None:
    events = example_events()[:9]
    temp = dict(events[5], event_id="EVT-TMP", type="patient.identified")
    temp["data"] = {"patient_id": "TMP-1", "temporary": True, "sex": "1"}
    events.insert(5, temp)
    events[6]["data"]["supersedes"] = "TMP-1"
    ctx_tmp = MappingContext("M", CREATED, "emr", incident_events=tuple(events[:6]))
    ctx_all = MappingContext("M", CREATED, "emr", incident_events=tuple(events))
    (before,) = resources(incident_bundle(events[5], ctx_tmp), "Patient")
    (after,) = resources(incident_bundle(events[-1], ctx_all), "Patient")
    key = {"system": BASE + "patient", "value": "TMP-1"}
    assert before["identifier"][0] == key == after["identifier"][0]
    assert {"system": BASE + "patient", "value": "PAT-20261125-0001"} in after["identifier"]


def test_valid_with_r4b_models_and_our_profiles() -> None:
    for number in range(1, 18):
        bundle = bundle_at(number)
        assert validate_bundle(bundle) == [], number
        assert validate_fhir(bundle) == [], number


def test_invalid_bundle_is_a_mapping_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import mappings.fhir as module

    def broken(event: Mapping[str, Any], ctx: MappingContext) -> dict[str, Any]:
        return {"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": 3}]}

    monkeypatch.setattr(module, "incident_bundle", broken)
    events = example_events()
    ctx = MappingContext("M", CREATED, "emr", incident_events=tuple(events[:2]))
    with pytest.raises(MappingError, match="FHIR validation failed"):
        module.fhir_r4_transaction(events[1], ctx)
    off = MappingContext("M", CREATED, "emr", options={"validate": False})
    assert module.fhir_r4_transaction(events[1], off).body


def test_options_are_read_by_the_spec_hub_check_uses() -> None:
    with pytest.raises(MappingError, match="options"):
        bundle_at(9, colour="red")  # hub check refuses it too; the mapping must not ignore it
    without_validation = MappingContext(
        "M",
        CREATED,
        "emr",
        options={"validate": False},
        incident_events=tuple(example_events()[:9]),
    )
    assert fhir_r4_transaction(example_events()[8], without_validation).body


def _stream(extra_vitals: int, number: int) -> dict[str, Any]:
    """The bundle for event ``number`` (1-based) of the example with ``extra_vitals`` more
    vitals events (a monitor's stream, a minute apart) inserted after event 9."""
    events = example_events()
    vitals = events[8]
    more = []
    for n in range(1, extra_vitals + 1):
        event = orjson.loads(orjson.dumps(vitals))
        event["event_id"] = f"EVT-STREAM-{n:04d}"
        for sample in event["data"]["samples"]:
            at = dt.datetime.fromisoformat(sample["measured_at"]) + dt.timedelta(minutes=n)
            sample["measured_at"] = at.isoformat()
        more.append(event)
    history = [*events[:9], *more, *events[9:]]
    ctx = MappingContext(
        message_id="MSG-STREAM",
        created_at=CREATED,
        destination="emr",
        incident_events=tuple(history[:number]),
    )
    return incident_bundle(history[number - 1], ctx)


def _observation_keys(bundle: Mapping[str, Any]) -> set[str]:
    return {r["identifier"][0]["value"] for r in resources(bundle, "Observation")}


def test_a_vitals_event_carries_its_own_samples_not_the_incidents_earlier_ones() -> None:
    alone = _stream(0, 9)
    # Event 9 again, now after 30 earlier samples of a monitor: its bundle is no bigger.
    events = example_events()
    stream = _stream(30, 9 + 30)  # the last streamed event
    assert len(stream["entry"]) == len(alone["entry"])
    own = {e["fullUrl"] for e in stream["entry"]}
    assert len(own) == len(stream["entry"])
    # Its Observations are those of its own samples (taken 30 minutes after event 9's).
    times = {r["effectiveDateTime"] for r in resources(stream, "Observation")}
    assert {"2026-11-25T08:43:10+08:00", "2026-11-25T08:46:40+08:00"} <= times
    first = {r["effectiveDateTime"] for r in resources(alone, "Observation")}
    assert {"2026-11-25T08:13:10+08:00", "2026-11-25T08:16:40+08:00"} <= first
    assert not {"2026-11-25T08:13:10+08:00", "2026-11-25T08:16:40+08:00"} & times
    # No ECG rides along with vital signs; the picture's context does.
    assert resources(stream, "DocumentReference") == []
    assert observation(stream, "131328") == []
    for kind in ("Patient", "Encounter", "Condition", "AllergyIntolerance", "Location"):
        assert len(resources(stream, kind)) == len(resources(alone, kind)) == 1, kind
    assert events[8]["type"] == "vitals.recorded"


def test_an_ecg_event_carries_its_ecg_and_any_other_event_the_whole_history() -> None:
    ecg = bundle_at(8)
    assert len(observation(ecg, "131328")) == 1
    handover = _stream(30, 14 + 30)  # handover.completed, after the stream
    every_sample = _observation_keys(_stream(0, 14)) | {
        key for n in range(1, 31) for key in _observation_keys(_stream(n, 9 + n))
    }
    assert _observation_keys(handover) == every_sample
    assert len(observation(handover, "131328")) == 1  # the ECG too
    assert len(resources(handover, "DocumentReference")) == 1


def _scenarios() -> dict[str, list[dict[str, Any]]]:
    folder = Path(__file__).resolve().parents[3] / "sandbox" / "scenarios"
    found = {"example": example_events()}
    for path in sorted(folder.glob("*.json")):
        found[path.stem] = orjson.loads(path.read_bytes())["events"]
    return found


def _as_the_whole_fold_files_them(event: Mapping[str, Any], ctx: MappingContext) -> Any:
    """The bundle of a stream event with its records taken from the whole fold's state
    (its own samples or ECG, as filed there), not from the event."""
    state, current = fold_through(events_through(event, ctx.incident_events))
    assert isinstance(current, VitalsRecordedEvent | EcgAcquired)
    patient_id = state.resolve_patient_id(current.data.patient_id)
    if isinstance(current, VitalsRecordedEvent):
        own = current.data.samples
        samples = [s for s in state.vitals.get(patient_id, []) if any(s is o for o in own)]
        records = EventRecords(patient_id, samples=samples)
    else:
        ecg_id = current.data.ecg_id
        ecgs = [e for e in state.ecgs.get(patient_id, []) if e.ecg_id == ecg_id]
        records = EventRecords(patient_id, ecgs=ecgs)
    return build_bundle(
        state,
        message_id=ctx.message_id,
        created_at=ctx.created_at,
        source=incident_source(state),
        tables=BUILTIN_TABLES,
        options={},
        patient_id=event_patient_id(event),
        records=records,
    )


@pytest.mark.parametrize("name", sorted(_scenarios()))
def test_a_stream_events_bundle_is_the_one_the_whole_fold_gives(name: str) -> None:
    events = _scenarios()[name]
    vitals = next(e for e in example_events() if e["type"] == "vitals.recorded")
    # A monitor attached to the first patient named keeps sending under that id, also
    # after the patient is identified under another (a temporary id superseded).
    first = next((e["data"]["patient_id"] for e in events if "patient_id" in e["data"]), None)
    history: list[dict[str, Any]] = []
    for n, event in enumerate(events):
        monitor = orjson.loads(orjson.dumps(vitals))
        monitor.update(event_id=f"MON-{n:04d}", incident_id=events[0]["incident_id"])
        if first is not None:
            monitor["data"]["patient_id"] = first
            monitor.pop("patient_ref", None)
        history += [event, monitor]
    checked = 0
    for k, event in enumerate(history):
        if event["type"] not in ("vitals.recorded", "ecg.acquired"):
            continue
        ctx = MappingContext(
            message_id=f"M{k}",
            created_at=CREATED,
            destination="emr",
            incident_events=tuple(history[: k + 1]),
        )
        assert incident_bundle(event, ctx) == _as_the_whole_fold_files_them(event, ctx), k
        checked += 1
    assert checked >= len(events)
