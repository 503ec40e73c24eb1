"""Casualties of one incident taken to different hospitals.

The precipitous birth, with the newborn sent on to a children's hospital while the
mother stays at the incident's hospital: `destination.assigned` with a `patient_ref`
assigns that patient alone, and every mapping follows each patient's own destination.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from hub.hl7v2.er7 import Message, parse_message, split_messages
from hub.model import fold, parse_events
from mappings.base import MappingContext, NothingToSend
from mappings.fhir import incident_bundle
from mappings.hl7v2 import hl7v2_adt, hl7v2_oru

SCENARIOS = Path(__file__).resolve().parents[3] / "sandbox" / "scenarios"
AT = "2026-11-25T11:00:00+08:00"
MATERNITY = "H120111001"  # the incident's hospital in the scenario
CHILDREN = "H120104002"
MOTHER, NEWBORN = "PAT-TJ-0522-M", "TMP-TJ-0522-B"
CREATED = dt.datetime(2026, 11, 25, 3, 0, tzinfo=dt.UTC)


def birth() -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = json.loads(
        (SCENARIOS / "precipitous-birth-tianjin.json").read_text(encoding="utf-8")
    )["events"]
    return events


def add(events: list[dict[str, Any]], kind: str, data: dict[str, Any], **envelope: Any) -> None:
    events.append(
        {
            "event_id": f"X-{len(events):03d}",
            "type": kind,
            "incident_id": events[0]["incident_id"],
            "occurred_at": AT,
            "source": "dispatch-tianjin",
            "data": data,
            **envelope,
        }
    )


def newborn_to_children(events: list[dict[str, Any]], patient_ref: str = NEWBORN) -> None:
    data = {"hospital_code": CHILDREN, "hospital_name": "天津市儿童医院"}
    add(events, "destination.assigned", data, patient_ref=patient_ref)


def context(events: list[dict[str, Any]], **options: Any) -> MappingContext:
    return MappingContext("06H1A2B3C4D5E6F7G8H9", CREATED, "his", options, tuple(events))


def adts(events: list[dict[str, Any]], hospital_code: str) -> list[Message]:
    body = hl7v2_adt(events[-1], context(events, hospital_code=hospital_code)).body
    return [parse_message(part.decode()) for part in split_messages(body)]


def hub_patient_id(message: Message) -> str:
    """The PID-3 identifier of type PI (the hub's patient id)."""
    pid = message.segment("PID")
    assert pid is not None
    reps = range(1, pid.repetitions(3) + 1)
    return next(pid.get(3, 1, rep=r) for r in reps if pid.get(3, 5, rep=r) == "PI")


def sent(messages: list[Message]) -> list[tuple[str, str]]:
    """(trigger, hub patient id) of each message."""
    return [(m.header.message_type, hub_patient_id(m)) for m in messages]


def test_a_patient_assigned_alone_goes_there_and_the_others_stay() -> None:
    events = birth()
    newborn_to_children(events)
    state = fold(parse_events(json.dumps(events)))
    assert state.destination is not None and state.destination.hospital_code == MATERNITY
    assert [state.destination_for(p).hospital_code for p in (MOTHER, NEWBORN)] == [  # type: ignore[union-attr]
        MATERNITY,
        CHILDREN,
    ]


def test_the_assignment_follows_the_patient_through_identification() -> None:
    events = birth()
    newborn_to_children(events)
    add(
        events,
        "patient.identified",
        {"patient_id": "PAT-TJ-0522-B", "name": "王小宝", "supersedes": NEWBORN},
    )
    state = fold(parse_events(json.dumps(events)))
    destination = state.destination_for("PAT-TJ-0522-B")
    assert destination is not None and destination.hospital_code == CHILDREN
    # Named by the permanent id, the assignment also covers the temporary one.
    events = birth()
    add(
        events,
        "patient.identified",
        {"patient_id": "PAT-TJ-0522-B", "name": "王小宝", "supersedes": NEWBORN},
    )
    newborn_to_children(events, patient_ref="PAT-TJ-0522-B")
    state = fold(parse_events(json.dumps(events)))
    destination = state.destination_for(NEWBORN)
    assert destination is not None and destination.hospital_code == CHILDREN


def test_a_later_assignment_of_the_whole_incident_takes_every_patient() -> None:
    events = birth()
    newborn_to_children(events)
    add(events, "destination.assigned", {"hospital_code": "H120000009"})
    state = fold(parse_events(json.dumps(events)))
    assert state.patient_destinations == {}
    assert {state.destination_for(p).hospital_code for p in (MOTHER, NEWBORN)} == {  # type: ignore[union-attr]
        "H120000009"
    }


def test_adt_moves_only_the_reassigned_patient() -> None:
    events = birth()
    newborn_to_children(events)
    assert sent(adts(events, MATERNITY)) == [("ADT^A11", NEWBORN)]
    [registered] = adts(events, CHILDREN)
    assert sent([registered]) == [("ADT^A04", NEWBORN)]
    assert registered.get("MSH-6") == CHILDREN
    assert registered.get("PV1-3.4") == CHILDREN
    assert registered.get("ZPH-14") == ""
    # Afterwards each hospital hears of its own patient only.
    for patient, here, elsewhere in ((MOTHER, MATERNITY, CHILDREN), (NEWBORN, CHILDREN, MATERNITY)):
        add(events, "assessment.updated", {"patient_id": patient, "assessed_at": AT})
        assert sent(adts(events, here)) == [("ADT^A08", patient)]
        with pytest.raises(NothingToSend, match=f"goes to {here}"):
            adts(events, elsewhere)


def test_oru_results_go_to_the_patients_own_hospital() -> None:
    events = birth()
    newborn_to_children(events)
    sample = {"measured_at": AT, "heart_rate": 150, "spo2": 93}
    add(events, "vitals.recorded", {"patient_id": NEWBORN, "samples": [sample]})
    with pytest.raises(NothingToSend, match=f"goes to {CHILDREN}, not {MATERNITY}"):
        hl7v2_oru(events[-1], context(events, hospital_code=MATERNITY))
    body = hl7v2_oru(events[-1], context(events, hospital_code=CHILDREN)).body
    message = parse_message(body.decode())
    assert (message.get("MSH-6"), message.get("PV1-3.4")) == (CHILDREN, CHILDREN)
    assert hub_patient_id(message) == NEWBORN


def test_each_encounter_names_its_own_hospital() -> None:
    events = birth()
    newborn_to_children(events)
    add(events, "unit.status", {"unit_id": "TJ-A-07", "status": "left_scene", "at": AT})
    bundle = incident_bundle(events[-1], MappingContext("M", CREATED, "emr", {}, tuple(events)))
    resources = {e["fullUrl"]: e["resource"] for e in bundle["entry"]}
    hospitals = {
        url: r["identifier"][0]["value"]
        for url, r in resources.items()
        if r["resourceType"] == "Organization" and r["identifier"][0]["value"].startswith("H")
    }
    assert sorted(hospitals.values()) == [CHILDREN, MATERNITY]
    provider_of = {}
    for resource in resources.values():
        if resource["resourceType"] == "Encounter":
            subject = resources[resource["subject"]["reference"]]
            patient = next(
                i["value"] for i in subject["identifier"] if i["value"] in (MOTHER, NEWBORN)
            )
            provider_of[patient] = hospitals[resource["serviceProvider"]["reference"]]
    assert provider_of == {MOTHER: MATERNITY, NEWBORN: CHILDREN}
