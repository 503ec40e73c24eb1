"""The remembered incident fold gives exactly what folding from scratch gives.

Mappings fold an incident's history for every delivery; ``IncidentMemo`` extends the
previous fold when the history only grew. These tests pin that the shortcut never
changes an answer: in delivery order, out of order, after a history was rewritten, and
for the ADT state machine.
"""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path
from typing import Any

import pytest

from hub.model.events import parse_events
from hub.model.state import IncidentState, fold
from hub.testing.examples import example_events
from mappings.base import MappingError
from mappings.hl7v2.adt import decide
from mappings.incident import IncidentMemo, fold_context_through, fold_through, parse_incident

SCENARIOS = Path(__file__).resolve().parents[3] / "sandbox" / "scenarios"


def _incidents() -> dict[str, list[dict[str, Any]]]:
    found = {"example": example_events()}
    for path in sorted(SCENARIOS.glob("*.json")):
        found[path.stem] = json.loads(path.read_text(encoding="utf-8"))["events"]
    return found


INCIDENTS = _incidents()


def _fresh(events: list[dict[str, Any]]) -> IncidentState:
    return fold(parse_events(json.dumps(events).encode()))


@pytest.mark.parametrize("name", sorted(INCIDENTS))
def test_folding_in_two_parts_equals_folding_at_once(name: str) -> None:
    parsed = parse_incident(INCIDENTS[name])
    whole = fold(parsed).model_dump()
    for cut in range(len(parsed) + 1):
        assert fold(parsed[cut:], fold(parsed[:cut])).model_dump() == whole, cut


@pytest.mark.parametrize("name", sorted(INCIDENTS))
def test_remembered_fold_in_delivery_order(name: str) -> None:
    events = INCIDENTS[name]
    memo: IncidentMemo[IncidentState] = IncidentMemo(IncidentState, lambda s, new: fold(new, s))
    for k in range(1, len(events) + 1):
        state, last = memo.reduce(events[:k])
        assert state.model_dump() == _fresh(events[:k]).model_dump(), k
        assert last.event_id == events[k - 1]["event_id"]


# What fold_context_through leaves incomplete (see its docstring).
_RECORDS = {"vitals", "ecgs", "event_ids", "last_occurred_at", "ignored_event_ids"}


def _with_a_monitor(events: list[dict[str, Any]], first: bool) -> list[dict[str, Any]]:
    """The incident with a monitor's vitals after each event (and, with ``first``,
    before any: a stream that starts before dispatch data reaches the hub)."""
    vitals = next(e for e in INCIDENTS["example"] if e["type"] == "vitals.recorded")
    out: list[dict[str, Any]] = []

    def sample(n: int) -> dict[str, Any]:
        event = copy.deepcopy(vitals)
        event.update(event_id=f"MON-{n:04d}", incident_id=events[0]["incident_id"])
        event["source"] = "monitor-7"
        return event

    if first:
        out.append(sample(0))
    for n, event in enumerate(events, start=1):
        out += [event, sample(n)]
    return out


@pytest.mark.parametrize("first", [False, True])
@pytest.mark.parametrize("name", sorted(INCIDENTS))
def test_the_context_fold_equals_the_whole_fold_but_for_the_records(name: str, first: bool) -> None:
    events = _with_a_monitor(INCIDENTS[name], first)
    for k in range(1, len(events) + 1):
        context, last = fold_context_through(events[:k])
        whole = _fresh(events[:k])
        assert context.model_dump(exclude=_RECORDS) == whole.model_dump(exclude=_RECORDS), k
        assert last.event_id == events[k - 1]["event_id"]


@pytest.mark.parametrize("hospital_code", [None, "H1"])
@pytest.mark.parametrize("name", sorted(INCIDENTS))
def test_adt_decisions_skip_records_as_replaying_every_fold_did(
    name: str, hospital_code: str | None
) -> None:
    from mappings.hl7v2 import adt

    events = parse_incident(_with_a_monitor(INCIDENTS[name], first=True))
    state, registered = IncidentState(), {}  # the replay as it was: a fold per event
    for k, event in enumerate(events):
        before, state = state, fold([event], state)
        expected = adt._step(event, before, state, registered, hospital_code)
        actions, now = adt.decide(events[: k + 1], hospital_code)
        assert list(actions) == expected, k
        assert now.model_dump(exclude=_RECORDS) == state.model_dump(exclude=_RECORDS), k


def test_remembered_fold_in_any_order_of_prefixes() -> None:
    events = INCIDENTS["example"]
    order = list(range(1, len(events) + 1)) * 2
    random.Random(7).shuffle(order)
    for k in order:
        state, _ = fold_through(events[:k])
        assert state.model_dump() == _fresh(events[:k]).model_dump(), k


def test_a_rewritten_history_is_folded_again_not_served_stale() -> None:
    events = copy.deepcopy(INCIDENTS["example"])
    vitals = next(i for i, e in enumerate(events) if e["type"] == "vitals.recorded")
    before, _ = fold_through(events[: vitals + 1])
    # Another body under the same event id (stored dicts are never changed in place).
    events[vitals] = copy.deepcopy(events[vitals])
    events[vitals]["data"]["samples"][0]["heart_rate"] = 131
    after, _ = fold_through(events[: vitals + 2])
    patient = events[vitals]["data"]["patient_id"]
    assert before.vitals[patient][0].heart_rate != 131
    assert after.vitals[patient][0].heart_rate == 131
    assert after.model_dump() == _fresh(events[: vitals + 2]).model_dump()


def test_an_invalid_new_event_is_a_mapping_error_and_spoils_nothing() -> None:
    events = copy.deepcopy(INCIDENTS["example"])
    good, _ = fold_through(events[:3])
    broken = copy.deepcopy(events[3])
    broken["occurred_at"] = "not a time"
    with pytest.raises(MappingError, match="do not validate"):
        fold_through([*events[:3], broken])
    again, _ = fold_through(events[:3])
    assert again.model_dump() == good.model_dump()
    assert fold_through(events[:4])[0].model_dump() == _fresh(events[:4]).model_dump()


def test_the_memo_forgets_the_least_recently_used_incident() -> None:
    calls: list[int] = []

    def step(state: IncidentState, new: Any) -> IncidentState:
        calls.append(len(new))
        return fold(new, state)

    memo: IncidentMemo[IncidentState] = IncidentMemo(IncidentState, step, size=1)
    one = INCIDENTS["example"][:2]
    other = INCIDENTS["trauma-changzhi"][:2]
    memo.reduce(one)
    memo.reduce(one)  # remembered: no step
    memo.reduce(other)  # evicts the first
    memo.reduce(one)
    assert calls == [2, 2, 2]


@pytest.mark.parametrize("name", sorted(INCIDENTS))
@pytest.mark.parametrize("hospital_code", [None, "H1"])
def test_adt_decisions_are_the_same_with_the_memo(name: str, hospital_code: str | None) -> None:
    from mappings.hl7v2 import adt

    events = INCIDENTS[name]
    memo = adt._REPLAYS.setdefault(
        hospital_code,
        IncidentMemo(adt._Replay, lambda s, new: adt._replay(s, new, hospital_code)),
    )
    for k in range(1, len(events) + 1):
        replay, _ = memo.reduce(events[:k])
        actions, state = decide(parse_incident(events[:k]), hospital_code)
        assert replay.actions == actions, k
        assert replay.state.model_dump() == state.model_dump(), k


@pytest.mark.parametrize("name", sorted(INCIDENTS))
def test_oru_patient_segments_written_once_are_those_of_the_whole_fold(name: str) -> None:
    """hl7v2-oru writes PID and PV1 once per incident state and options (see
    _patient_segments): every ORU of a monitor's stream, under two option sets in turn,
    holds the PID and PV1 a builder writes from the whole fold's state."""
    import datetime as dt

    from mappings.base import MappingContext, NothingToSend
    from mappings.hl7v2.common import MessageBuilder, parse_options
    from mappings.hl7v2.oru import hl7v2_oru
    from mappings.incident import incident_source

    events = _with_a_monitor(INCIDENTS[name], first=True)
    checked = 0
    for k in range(1, len(events) + 1):
        if events[k - 1]["type"] != "vitals.recorded":
            continue
        for options in ({}, {"patient_id_authority": "OTHER"}):
            ctx = MappingContext(
                f"M{k}", dt.datetime(2026, 12, 4, tzinfo=dt.UTC), "his", options, tuple(events[:k])
            )
            try:
                body = hl7v2_oru(events[k - 1], ctx).body.decode()
            except NothingToSend:
                continue
            state = _fresh(events[:k])
            current = parse_events(json.dumps(events[k - 1 : k]).encode())[0]
            assert current.patient_ref is not None
            patient_id = state.resolve_patient_id(current.patient_ref)
            builder = MessageBuilder.start(
                parse_options(options), state, ctx, incident_source(state), patient_id
            )
            builder.pid(state.patients.get(patient_id), patient_id)
            builder.pv1(patient_id, full=False)
            segments = body.split("\r")
            assert segments[1:3] == list(builder.writer.segments), (k, options)
            checked += 1
    assert checked > 0
