"""One Encounter per patient of an incident: the FHIR bundles of every sandbox scenario,
event by event, applied to the EMR twin (sandbox/fhir_twin.py) in-process.

The precipitous birth has two patients in one incident (the mother PAT-TJ-0522-M and the
temporary newborn TMP-TJ-0522-B): each must end with its own Encounter, and no bundle
may ever point one patient's resources at the other's Patient or Encounter.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mappings.base import MappingContext
from mappings.fhir import incident_bundle
from sandbox.fhir_twin import FhirServerTwin

ROOT = Path(__file__).resolve().parents[3]
SCENARIOS = ROOT / "sandbox" / "scenarios"
NAMES = sorted(path.stem for path in SCENARIOS.glob("*.json"))
BASE = "https://prehospital-hub.example/id/"
CREATED = dt.datetime(2026, 11, 25, 1, 0, tzinfo=dt.UTC)
MOTHER, NEWBORN = "PAT-TJ-0522-M", "TMP-TJ-0522-B"
BIRTH_INCIDENT = "TJ120-20261125-0522"
INCIDENT_WIDE = {"unit.status", "destination.assigned", "incident.cancelled"}


def scenario_events(name: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = json.loads(
        (SCENARIOS / f"{name}.json").read_text(encoding="utf-8")
    )["events"]
    return events


def bundles(events: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """The bundle of each event, mapped as the worker does (the history through it)."""
    for number, event in enumerate(events, start=1):
        ctx = MappingContext(
            message_id=f"MSG-{number}",
            created_at=CREATED,
            destination="emr",
            incident_events=tuple(events[:number]),
        )
        yield incident_bundle(event, ctx)


def key_of(resource: dict[str, Any], kind: str) -> str:
    """The value of the resource's key identifier (<base><kind>)."""
    return next(i["value"] for i in resource["identifier"] if i["system"] == BASE + kind)


def by_type(bundle: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind]


def patient_keys_of_encounters(bundle: dict[str, Any]) -> dict[str, str]:
    """Encounter key -> patient key of its subject, checking each subject is its own."""
    by_url = {e["fullUrl"]: e["resource"] for e in bundle["entry"]}
    found = {}
    for encounter in by_type(bundle, "Encounter"):
        key = key_of(encounter, "encounter")
        incident, _, patient_key = key.partition("/")
        subject = by_url[encounter["subject"]["reference"]]
        assert subject["resourceType"] == "Patient"
        assert key_of(subject, "patient") == patient_key, key
        assert key_of(encounter, "incident") == incident
        found[key] = patient_key
    return found


def assert_no_cross_patient_reference(bundle: dict[str, Any]) -> None:
    """Every Encounter's subject is its own patient; every clinical resource points at
    one patient's Patient and that same patient's Encounter."""
    patient_keys_of_encounters(bundle)
    by_url = {e["fullUrl"]: e["resource"] for e in bundle["entry"]}
    for resource in by_url.values():
        subject = resource.get("subject") or resource.get("patient")
        encounter_ref = (resource.get("encounter") or {}).get("reference") or next(
            (r["reference"] for r in (resource.get("context") or {}).get("encounter", [])),
            None,
        )
        if resource["resourceType"] == "Encounter" or subject is None:
            continue
        assert encounter_ref is not None, resource["resourceType"]
        encounter = by_url[encounter_ref]
        assert encounter["subject"] == subject, (resource["resourceType"], resource["identifier"])


def apply(twin: FhirServerTwin, produced: list[dict[str, Any]]) -> None:
    """POST each bundle to the twin in-process, in order; each must be applied."""

    async def post_all() -> None:
        transport = httpx.ASGITransport(app=twin.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://emr") as client:
            for bundle in produced:
                answer = await client.post("/", json=bundle)
                assert answer.status_code == 200, answer.text

    asyncio.run(post_all())


def twin_encounter_subjects(twin: FhirServerTwin) -> dict[str, str]:
    """Encounter key -> patient key of the Patient its subject points at, on the twin."""
    patients = {p["id"]: key_of(p, "patient") for p in twin.resources("Patient")}
    subjects = {}
    for encounter in twin.resources("Encounter"):
        kind, _, resource_id = encounter["subject"]["reference"].partition("/")
        assert kind == "Patient"
        subjects[key_of(encounter, "encounter")] = patients[resource_id]
    return subjects


def play(events: list[dict[str, Any]], *, reverse: bool = False) -> FhirServerTwin:
    twin = FhirServerTwin()
    produced = list(bundles(events))
    for bundle in produced:
        assert_no_cross_patient_reference(bundle)
    apply(twin, produced[::-1] if reverse else produced)
    return twin


@pytest.mark.parametrize("reverse", [False, True], ids=["in-order", "reversed"])
def test_precipitous_birth_ends_with_one_encounter_per_patient(reverse: bool) -> None:
    twin = play(scenario_events("precipitous-birth-tianjin"), reverse=reverse)
    assert twin_encounter_subjects(twin) == {
        f"{BIRTH_INCIDENT}/{MOTHER}": MOTHER,
        f"{BIRTH_INCIDENT}/{NEWBORN}": NEWBORN,
    }
    encounters = twin.resources("Encounter")
    for encounter in encounters:  # both grouped under the dispatch number
        assert key_of(encounter, "incident") == BIRTH_INCIDENT
    by_patient = {key_of(e, "encounter").partition("/")[2]: e for e in encounters}
    # the newborn's clinical data hangs off the newborn's Encounter, the mother's off hers
    for observation in twin.resources("Observation"):
        owner = key_of(observation, "observation").partition(".")[0]
        encounter = by_patient[owner]
        assert observation["encounter"]["reference"] == f"Encounter/{encounter['id']}"
        assert observation["subject"] == encounter["subject"]
    (condition,) = twin.resources("Condition")
    assert condition["encounter"]["reference"] == f"Encounter/{by_patient[NEWBORN]['id']}"
    if not reverse:  # the last event is the mother's handover: her Encounter is finished
        assert by_patient[MOTHER]["status"] == "finished"
        assert by_patient[NEWBORN]["status"] == "in-progress"


def test_an_incident_wide_event_updates_every_patients_encounter() -> None:
    events = scenario_events("precipitous-birth-tianjin")
    produced = list(bundles(events))
    both_known = 4  # events[3] identifies the mother, events[4] the newborn
    for index, (event, bundle) in enumerate(zip(events, produced, strict=True)):
        keys = patient_keys_of_encounters(bundle)
        patient = event["data"].get("patient_id")
        if index < 3:
            assert keys == {}, event["event_id"]
        elif event["type"] in INCIDENT_WIDE and index >= both_known:
            assert sorted(keys.values()) == sorted([MOTHER, NEWBORN]), event["event_id"]
        else:
            assert list(keys.values()) == [patient], event["event_id"]
    destination = produced[[e["type"] for e in events].index("destination.assigned")]
    hospitals = by_type(destination, "Organization")
    (hospital_url,) = [
        e["fullUrl"]
        for e in destination["entry"]
        if e["resource"] in hospitals and e["resource"].get("name") == "西青区妇幼保健院"
    ]
    for encounter in by_type(destination, "Encounter"):
        assert encounter["serviceProvider"] == {"reference": hospital_url}


def test_an_event_about_a_patient_not_yet_identified_moves_nothing() -> None:
    # the phone-guided delivery (treatment.given for the mother) comes before any
    # patient.identified: no Patient, no Encounter yet
    events = scenario_events("precipitous-birth-tianjin")
    treatment_bundle = list(bundles(events[:3]))[-1]
    assert events[2]["type"] == "treatment.given"
    assert not by_type(treatment_bundle, "Patient")
    assert not by_type(treatment_bundle, "Encounter")


def test_a_temporary_patient_identified_later_keeps_exactly_one_encounter() -> None:
    # the newborn gets a permanent id after handover: same Patient, same Encounter
    events = scenario_events("precipitous-birth-tianjin")
    last = events[-1]
    events.append(
        {
            **last,
            "event_id": f"{BIRTH_INCIDENT}-014",
            "type": "patient.identified",
            "occurred_at": "2026-11-25T04:05:00+08:00",
            "data": {
                "patient_id": "PAT-TJ-0522-B",
                "name": "张雨之女",
                "supersedes": NEWBORN,
                "sex": "2",
                "birth_date": "2026-11-25",
                "special_groups": ["child"],
            },
        }
    )
    twin = play(events)
    assert twin_encounter_subjects(twin) == {
        f"{BIRTH_INCIDENT}/{MOTHER}": MOTHER,
        f"{BIRTH_INCIDENT}/{NEWBORN}": NEWBORN,
    }
    assert len(twin.resources("Patient")) == 2
    (newborn,) = [p for p in twin.resources("Patient") if key_of(p, "patient") == NEWBORN]
    assert {"system": BASE + "patient", "value": "PAT-TJ-0522-B"} in newborn["identifier"]


@pytest.mark.parametrize("name", NAMES)
def test_every_scenario_one_encounter_per_patient_chain(name: str) -> None:
    events = scenario_events(name)
    twin = play(events)
    superseded = {
        e["data"]["supersedes"]
        for e in events
        if e["type"] == "patient.identified" and e["data"].get("supersedes")
    }
    chains = {
        e["data"]["patient_id"]
        for e in events
        if e["type"] == "patient.identified" and e["data"]["patient_id"] not in superseded
    }
    subjects = twin_encounter_subjects(twin)
    assert len(subjects) == len(twin.resources("Encounter")) == len(chains)
    assert len(set(subjects.values())) == len(chains)


def _with_incident(events: list[dict[str, Any]], incident: str) -> list[dict[str, Any]]:
    moved = json.loads(json.dumps(events))
    for event in moved:
        event["event_id"] = f"{incident}-{event['event_id']}"
        event["incident_id"] = incident
    return moved


def test_a_patient_id_reused_in_another_incident_keeps_each_incidents_findings() -> None:
    """A master patient index gives one person the same id in every incident: the
    Patient is shared, but each incident's impression and reported allergies stay its own
    (keyed under its Encounter), so the second incident never overwrites the first's."""
    events = scenario_events("stemi-tianjin")
    later = "TJ120-20261126-0001"
    first = list(bundles(events))[-1]
    second = list(bundles(_with_incident(events, later)))[-1]
    patients = [{key_of(r, "patient") for r in by_type(b, "Patient")} for b in (first, second)]
    assert patients[0] == patients[1] != set()
    for kind, system in (("Condition", "impression"), ("AllergyIntolerance", "allergy")):
        keys_first = {key_of(r, system) for r in by_type(first, kind)}
        keys_second = {key_of(r, system) for r in by_type(second, kind)}
        assert keys_first, f"the scenario has no {kind}"
        assert not keys_first & keys_second, kind
        assert all(key.startswith(f"{later}/") for key in keys_second), keys_second
