"""Folding events into the incident state."""

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from hub.model import Event, IncidentState, UnitStatus, fold, parse_events
from hub.testing.examples import (
    EXAMPLE_INCIDENT_ID,
    EXAMPLE_PATIENT_ID,
    EXAMPLE_UNIT_ID,
    example_events,
)

TEMP_ID = "TMP-20261125-0001"


def parse(raw: list[dict[str, Any]]) -> list[Event]:
    return parse_events(json.dumps(raw))


def raw_event(number: int, event_type: str, clock: str, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "event_id": f"EVT-T-{number:03d}",
        "type": event_type,
        "incident_id": EXAMPLE_INCIDENT_ID,
        "occurred_at": f"2026-11-25T{clock}+08:00",
        "source": "test",
        "data": data,
    }


def vitals(number: int, patient_id: str, clock: str, heart_rate: int) -> dict[str, Any]:
    sample = {"measured_at": f"2026-11-25T{clock}+08:00", "heart_rate": heart_rate}
    return raw_event(
        number, "vitals.recorded", clock, {"patient_id": patient_id, "samples": [sample]}
    )


def temporary_then_identified() -> list[dict[str, Any]]:
    """An unconscious patient registered as TMP, treated, then identified."""
    return [
        raw_event(1, "patient.identified", "08:12:00", {"patient_id": TEMP_ID, "temporary": True}),
        vitals(2, TEMP_ID, "08:13:00", 130),
        raw_event(
            3,
            "assessment.updated",
            "08:14:00",
            {"patient_id": TEMP_ID, "assessed_at": "2026-11-25T08:14:00+08:00", "pain_score": 2},
        ),
        raw_event(
            4,
            "treatment.given",
            "08:15:00",
            {
                "patient_id": TEMP_ID,
                "given_at": "2026-11-25T08:15:00+08:00",
                "kind": "oxygen",
                "text": "鼻导管吸氧 3 L/min",
            },
        ),
        raw_event(
            5,
            "patient.identified",
            "08:20:00",
            {"patient_id": "PAT-9", "name": "刘洋", "supersedes": TEMP_ID},
        ),
        vitals(6, "PAT-9", "08:21:00", 110),
        vitals(7, TEMP_ID, "08:16:00", 120),  # a late monitor upload under the old id
    ]


def test_the_example_incident_folds_completely() -> None:
    state = fold(parse(example_events()))
    assert state.incident_id == EXAMPLE_INCIDENT_ID
    assert state.call is not None and state.call.call_id == "CALL-20261125-0001"
    assert list(state.units) == [EXAMPLE_UNIT_ID]
    assert [change.status for change in state.timeline] == list(UnitStatus)[1:]
    assert state.status_times[UnitStatus.patient_contact].isoformat() == "2026-11-25T08:12:30+08:00"
    assert state.unit_status == {EXAMPLE_UNIT_ID: UnitStatus.back_in_service}
    assert list(state.patients) == [EXAMPLE_PATIENT_ID]
    assert state.assessments[EXAMPLE_PATIENT_ID].gcs is not None
    assert len(state.vitals[EXAMPLE_PATIENT_ID]) == 2
    assert state.ecgs[EXAMPLE_PATIENT_ID][0].stemi_suspected is True
    assert state.treatments[EXAMPLE_PATIENT_ID][0].dose is not None
    assert state.destination is not None and state.destination.prenotify == "chest_pain"
    assert state.handover is not None and state.handover.patient_id == EXAMPLE_PATIENT_ID
    assert state.cancelled is not None
    assert fold(parse(example_events(include_cancellation=False))).cancelled is None
    assert state.last_occurred_at is not None
    assert len(state.event_ids) == len(example_events())


def test_identification_moves_the_temporary_patients_records() -> None:
    state = fold(parse(temporary_then_identified()))
    assert state.patient_links == {TEMP_ID: "PAT-9"}
    assert list(state.patients) == ["PAT-9"]
    assert list(state.superseded_patients) == [TEMP_ID]
    assert TEMP_ID not in state.vitals
    assert [sample.heart_rate for sample in state.vitals["PAT-9"]] == [130, 120, 110]
    assert state.assessments["PAT-9"].patient_id == "PAT-9"
    assert [item.patient_id for item in state.treatments["PAT-9"]] == ["PAT-9"]
    assert state.resolve_patient_id(TEMP_ID) == "PAT-9"


def test_identification_before_the_temporary_records_still_routes_them() -> None:
    raw = temporary_then_identified()
    state = fold(parse([raw[4], *raw[:4], *raw[5:]]))
    assert list(state.patients) == ["PAT-9"]
    assert list(state.superseded_patients) == [TEMP_ID]
    assert [sample.heart_rate for sample in state.vitals["PAT-9"]] == [130, 120, 110]


def test_unknown_patients_still_get_their_records() -> None:
    state = fold(parse([vitals(1, "PAT-NEVER-SEEN", "08:00:00", 80)]))
    assert state.patients == {}
    assert len(state.vitals["PAT-NEVER-SEEN"]) == 1


def test_repeats_and_other_incidents_are_ignored() -> None:
    first = vitals(1, "PAT-1", "08:00:00", 80)
    other = {**vitals(2, "PAT-1", "08:01:00", 81), "incident_id": "INC-OTHER"}
    state = fold(parse([first, first, other]))
    assert len(state.vitals["PAT-1"]) == 1
    assert state.ignored_event_ids == ["EVT-T-001", "EVT-T-002"]


def test_the_latest_assessment_wins_by_its_own_time() -> None:
    def assessment(number: int, clock: str, pain: int) -> dict[str, Any]:
        data = {"patient_id": "P", "assessed_at": f"2026-11-25T{clock}+08:00", "pain_score": pain}
        return raw_event(number, "assessment.updated", "09:00:00", data)

    state = fold(parse([assessment(1, "08:30:00", 3), assessment(2, "08:10:00", 9)]))
    assert state.assessments["P"].pain_score == 3


def test_mutual_supersession_does_not_loop() -> None:
    raw = [
        raw_event(
            1, "patient.identified", "08:00:00", {"patient_id": "A", "name": "a", "supersedes": "B"}
        ),
        vitals(2, "B", "08:01:00", 90),
        raw_event(
            3, "patient.identified", "08:02:00", {"patient_id": "B", "name": "b", "supersedes": "A"}
        ),
        vitals(4, "A", "08:03:00", 91),
    ]
    state = fold(parse(raw))
    assert state.patient_links == {"A": "B"}
    assert list(state.patients) == ["B"]
    assert [sample.heart_rate for sample in state.vitals["B"]] == [90, 91]


def test_folding_is_incremental_and_deterministic() -> None:
    events = parse(example_events() + temporary_then_identified())
    whole = fold(events)
    assert fold(events) == whole
    assert fold(events[9:], initial=fold(events[:9])) == whole
    assert IncidentState.model_validate_json(whole.model_dump_json()) == whole


def test_the_source_is_the_calls_else_the_first_events() -> None:
    call, *rest = example_events()
    monitor = {**vitals(90, "PAT-9", "07:59:00", 88), "source": "monitor"}
    second_call = {**call, "event_id": "EVT-T-091", "source": "other-center"}
    assert fold(parse([monitor])).source == "monitor"
    # A call folded later still names the incident's producer; a second call does not.
    states = [fold(parse([monitor]))]
    for event in [call, second_call, *rest]:
        states.append(fold(parse([event]), initial=states[-1]))
    assert {state.source for state in states[1:]} == {call["source"]}
    assert fold(parse([monitor, call, second_call, *rest])) == states[-1]
    assert fold([]).source is None


ALL_EVENTS = parse(example_events() + temporary_then_identified())


@settings(max_examples=100, deadline=None)
@given(st.permutations(ALL_EVENTS), st.lists(st.sampled_from(ALL_EVENTS), max_size=5))
def test_any_order_folds_without_raising(order: list[Event], repeats: list[Event]) -> None:
    state = fold([*order, *repeats])
    in_order = fold(ALL_EVENTS)
    assert [change.at for change in state.timeline] == sorted(c.at for c in state.timeline)
    assert state.status_times == in_order.status_times
    assert state.patient_links == in_order.patient_links
    assert sorted(s.measured_at for s in state.vitals["PAT-9"]) == [
        s.measured_at for s in in_order.vitals["PAT-9"]
    ]
    assert len(state.ignored_event_ids) == len(repeats)
