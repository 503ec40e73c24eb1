"""The event envelope: parsing every body form, exact error paths, schema and dumps."""

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub.model import (
    EVENT_CLASSES,
    EVENT_TYPES,
    CallReceived,
    EventValidationError,
    FieldError,
    PatientIdentified,
    dump_event,
    event_json_schema,
    parse_events,
)
from hub.testing.examples import EXAMPLE_PATIENT_ID, EXAMPLE_RESIDENT_ID, example_events


def by_type(event_type: str) -> dict[str, Any]:
    return next(event for event in example_events() if event["type"] == event_type)


def errors_of(body: str | bytes) -> list[FieldError]:
    with pytest.raises(EventValidationError) as caught:
        parse_events(body)
    return caught.value.errors


def test_example_covers_every_type_in_a_plausible_order() -> None:
    events = example_events()
    assert {event["type"] for event in events} == set(EVENT_TYPES)
    times = [event["occurred_at"] for event in events]
    assert times == sorted(times)
    assert len({event["event_id"] for event in events}) == len(events)
    assert {event["type"] for event in example_events(include_cancellation=False)} == set(
        EVENT_TYPES
    ) - {"incident.cancelled"}


def test_event_types_are_exactly_the_eleven() -> None:
    assert EVENT_TYPES == (
        "call.received",
        "unit.dispatched",
        "unit.status",
        "patient.identified",
        "assessment.updated",
        "vitals.recorded",
        "ecg.acquired",
        "treatment.given",
        "destination.assigned",
        "handover.completed",
        "incident.cancelled",
    )


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_each_type_parses_as_a_single_object(event_type: str) -> None:
    raw = by_type(event_type)
    [event] = parse_events(json.dumps(raw, ensure_ascii=False))
    assert type(event) is EVENT_CLASSES[event_type]
    assert event.type == event_type
    assert event.occurred_at.utcoffset() is not None
    assert parse_events(json.dumps(dump_event(event)).encode()) == [event]


@pytest.mark.parametrize("wrap", [lambda events: events, lambda events: {"events": events}])
def test_batches_parse_in_order(wrap: Any) -> None:
    raw = example_events()
    events = parse_events(json.dumps(wrap(raw), ensure_ascii=False).encode("utf-8"))
    assert [event.event_id for event in events] == [event["event_id"] for event in raw]
    assert isinstance(events[0], CallReceived)


def test_patient_ref_is_derived_from_the_data() -> None:
    events = parse_events(json.dumps(example_events()))
    refs = {event.type: event.patient_ref for event in events}
    for event_type in (
        "patient.identified",
        "vitals.recorded",
        "ecg.acquired",
        "handover.completed",
    ):
        assert refs[event_type] == EXAMPLE_PATIENT_ID
    assert refs["call.received"] is None
    assert refs["destination.assigned"] is None


def test_patient_ref_must_match_the_data() -> None:
    raw = by_type("treatment.given")
    raw["patient_ref"] = "PAT-SOMEONE-ELSE"
    [error] = errors_of(json.dumps(raw))
    assert (error.path, error.error_type) == ("patient_ref", "patient_ref_mismatch")


def test_dump_omits_absent_fields_and_round_trips() -> None:
    events = parse_events(json.dumps(example_events()))
    dumped = [dump_event(event) for event in events]
    assert "caller_is_deaf" in dumped[0]["data"]
    assert all(value is not None for value in dumped[0]["data"].values())
    assert dumped[0]["occurred_at"] == "2026-11-25T08:00:00+08:00"
    assert parse_events(json.dumps(dumped)) == events


def test_values_are_normalised() -> None:
    raw = by_type("patient.identified")
    raw["data"]["resident_id"] = "11010519491231002x"
    raw["data"]["birth_date"] = "1949-12-31"
    [event] = parse_events(json.dumps(raw))
    assert isinstance(event, PatientIdentified)
    assert event.data.resident_id == "11010519491231002X"


def test_bad_check_digit_is_reported_at_its_path() -> None:
    call, patient = by_type("call.received"), by_type("patient.identified")
    patient["data"]["resident_id"] = EXAMPLE_RESIDENT_ID[:17] + "1"
    [error] = errors_of(json.dumps({"events": [call, patient]}))
    assert error == FieldError(
        "events[1].data.resident_id", "check digit is 1, expected 9", "resident_id_check_digit"
    )
    [error] = errors_of(json.dumps([call, patient]))
    assert error.path == "events[1].data.resident_id"


def test_single_object_paths_start_at_the_event() -> None:
    raw = by_type("vitals.recorded")
    raw["data"]["samples"][0]["spo2"] = 101
    [error] = errors_of(json.dumps(raw))
    assert (error.path, error.error_type) == ("data.samples[0].spo2", "less_than_equal")


def test_naive_datetime_is_rejected() -> None:
    raw = example_events()
    raw[2]["occurred_at"] = "2026-11-25T08:02:40"
    raw[2]["data"]["at"] = "2026-11-25T08:02:40"
    errors = errors_of(json.dumps(raw))
    assert [(error.path, error.error_type) for error in errors] == [
        ("events[2].occurred_at", "timezone_aware"),
        ("events[2].data.at", "timezone_aware"),
    ]


def test_unknown_and_missing_types_list_the_allowed_ones() -> None:
    raw = example_events()[:3]
    raw[1]["type"] = "unit.teleported"
    del raw[2]["type"]
    unknown, missing = errors_of(json.dumps(raw))
    assert (unknown.path, unknown.error_type) == ("events[1].type", "union_tag_invalid")
    assert "'unit.teleported'" in unknown.reason
    assert all(event_type in unknown.reason for event_type in EVENT_TYPES)
    assert (missing.path, missing.error_type) == ("events[2].type", "union_tag_not_found")


def test_unknown_fields_are_forbidden() -> None:
    raw = by_type("call.received")
    raw["data"]["colour"] = "red"
    [error] = errors_of(json.dumps(raw))
    assert (error.path, error.error_type) == ("data.colour", "extra_forbidden")


@pytest.mark.parametrize("body", ["[]", '{"events": []}'])
def test_an_empty_batch_is_an_error(body: str) -> None:
    [error] = errors_of(body)
    assert (error.path, error.error_type) == ("events", "too_short")


def test_invalid_json_quotes_the_decoder() -> None:
    [error] = errors_of('[{"type": "call.received",')
    assert error.path == ""
    assert error.error_type == "json_invalid"
    assert "line 1 column" in error.reason


@pytest.mark.parametrize("body", ["42", '"text"', "null", "true"])
def test_bodies_of_the_wrong_shape_are_rejected(body: str) -> None:
    [error] = errors_of(body)
    assert (error.path, error.error_type) == ("", "body_type")


def test_model_level_rules_report_the_record() -> None:
    raw = by_type("patient.identified")
    raw["data"]["birth_date"] = "1958-03-13"
    [error] = errors_of(json.dumps(raw))
    assert (error.path, error.error_type) == ("data", "birth_date_mismatch")


def test_the_exception_message_summarises() -> None:
    with pytest.raises(EventValidationError, match=r"1 invalid field\(s\): events: the batch"):
        parse_events("[]")


def test_json_schema_describes_every_type() -> None:
    schema = event_json_schema()
    assert set(schema["discriminator"]["mapping"]) == set(EVENT_TYPES)
    assert len(schema["oneOf"]) == len(EVENT_TYPES)
    defs = schema["$defs"]
    assert defs["Patient"]["properties"]["resident_id"]["anyOf"][0]["pattern"]
    assert "total" not in defs["Gcs"]["properties"]
    json.dumps(schema)


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["type", "events", "data", "event_id", "x", "patient_id"])
            | st.text(max_size=8),
            children,
            max_size=5,
        )
    ),
    max_leaves=20,
)


def assert_parses_or_reports(body: str | bytes) -> None:
    try:
        parse_events(body)
    except EventValidationError as error:
        assert error.errors
        assert all(isinstance(item, FieldError) for item in error.errors)


@settings(max_examples=150, deadline=None)
@given(JSON)
def test_json_garbage_only_raises_event_validation_error(value: Any) -> None:
    assert_parses_or_reports(json.dumps(value))


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=64) | st.text(max_size=64))
def test_raw_garbage_only_raises_event_validation_error(body: bytes | str) -> None:
    with pytest.raises(EventValidationError):
        parse_events(body)


def leaf_paths(value: Any, prefix: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    if isinstance(value, dict):
        return [p for key, item in value.items() for p in leaf_paths(item, (*prefix, key))]
    if isinstance(value, list):
        return [p for index, item in enumerate(value) for p in leaf_paths(item, (*prefix, index))]
    return [prefix]


EXAMPLE_LEAVES = [
    (index, path) for index, event in enumerate(example_events()) for path in leaf_paths(event)
]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(EXAMPLE_LEAVES), JSON)
def test_mutated_examples_parse_or_report(
    leaf: tuple[int, tuple[str | int, ...]], value: Any
) -> None:
    index, path = leaf
    events = example_events()
    target: Any = events[index]
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    assert_parses_or_reports(json.dumps({"events": events}))
