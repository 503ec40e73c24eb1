"""The incident as a mapping sees it: the history up to the delivered event, folded.

Shared by every mapping with ``needs_incident = True`` (FHIR, HL7 v2), so they all
describe an incident the same way. Parsing and folding cost ~6 µs per event of history,
paid again for every delivery: a monitor sending vitals every minute makes that
quadratic. :class:`IncidentMemo` remembers the fold per incident and applies only the
events added since the last delivery.
"""

from __future__ import annotations

import operator
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, Generic, NamedTuple, TypeVar

import orjson

from hub.model.errors import EventValidationError
from hub.model.events import EcgAcquired, Event, VitalsRecordedEvent, parse_events
from hub.model.state import IncidentState, fold
from mappings.base import MappingError

__all__ = [
    "MEMO_INCIDENTS",
    "RECORD_EVENTS",
    "RECORD_EVENT_TYPES",
    "IncidentMemo",
    "event_patient_id",
    "events_through",
    "fold_context_through",
    "fold_events",
    "fold_through",
    "has_context",
    "incident_source",
    "parse_incident",
]


def events_through(
    event: Mapping[str, Any], earlier: Sequence[Mapping[str, Any]]
) -> list[Mapping[str, Any]]:
    """The incident's events up to and including event, each once, event last.

    The worker's incident history may already hold the event itself (it was stored in
    the same transaction as the delivery) and, on a resend, later events: those after
    it are left out so a message always describes the incident as of its own event.
    """
    event_id = event.get("event_id")
    if earlier and earlier[-1].get("event_id") == event_id:
        return list(earlier)  # the usual case: the event is the newest of its incident
    through: list[Mapping[str, Any]] = []
    for item in earlier:
        if item.get("event_id") == event_id:
            break
        through.append(item)
    through.append(event)
    return through


def parse_incident(dicts: Sequence[Mapping[str, Any]]) -> list[Event]:
    """The events as canonical records; MappingError if any does not validate."""
    try:
        return parse_events(orjson.dumps(list(dicts)))
    except EventValidationError as exc:
        raise MappingError(f"the incident's events do not validate: {exc}") from None


T = TypeVar("T")
# Incidents a memo remembers (each with its whole history, as the store's shared dicts).
MEMO_INCIDENTS = 256


class _Entry(NamedTuple):
    events: tuple[Mapping[str, Any], ...]  # held, so an identity seen again is this one
    value: Any
    last: Event


class IncidentMemo(Generic[T]):
    """A pure reduction over an incident's events, remembered per incident.

    ``reduce`` gives ``step(start(), events)``, and ``step(step(v, a), b)`` must equal
    ``step(v, a + b)``: when the events begin with those of the previous call for the same
    incident (and ``key``), only the new ones are parsed and applied. An event matches
    when it is the same object (the store hands out one dict per event id) or has the
    same JSON text, so a changed, reordered or shorter history (a resend of an older
    event) is folded from scratch, never served from a stale entry. ``step`` must not
    mutate its input: the remembered value is reused.
    """

    def __init__(
        self,
        start: Callable[[], T],
        step: Callable[[T, Sequence[Event]], T],
        size: int = MEMO_INCIDENTS,
    ) -> None:
        self._start = start
        self._step = step
        self._size = size
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def reduce(self, dicts: Sequence[Mapping[str, Any]], key: Hashable = None) -> tuple[T, Event]:
        """The reduced value and the last event, parsed; MappingError if one is invalid."""
        if not dicts:
            raise MappingError("an incident needs at least one event")
        ident = (str(dicts[-1].get("incident_id")), key)
        with self._lock:
            entry = self._entries.get(ident)
        if entry is not None and _extends(entry.events, dicts):
            if len(dicts) == len(entry.events):
                return entry.value, entry.last
            value: T = entry.value
            new = parse_incident(dicts[len(entry.events) :])
        else:
            value = self._start()
            new = parse_incident(dicts)
        value = self._step(value, new)
        with self._lock:
            self._entries[ident] = _Entry(tuple(dicts), value, new[-1])
            self._entries.move_to_end(ident)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)
        return value, new[-1]


def _extends(known: Sequence[Mapping[str, Any]], dicts: Sequence[Mapping[str, Any]]) -> bool:
    """Whether ``dicts`` begins with ``known``, event by event."""
    if len(dicts) < len(known):
        return False
    if all(map(operator.is_, known, dicts)):  # the usual case, at C speed
        return True
    return all(
        a is b or orjson.dumps(a) == orjson.dumps(b) for a, b in zip(known, dicts, strict=False)
    )


_FOLDS: IncidentMemo[IncidentState] = IncidentMemo(
    IncidentState, lambda state, new: fold(new, state)
)


def fold_through(dicts: Sequence[Mapping[str, Any]]) -> tuple[IncidentState, Event]:
    """The incident folded through its last event, and that event; MappingError if invalid."""
    return _FOLDS.reduce(dicts)


# Events whose data only fill the state's clinical records (vitals, ecgs).
RECORD_EVENTS = (VitalsRecordedEvent, EcgAcquired)
# Their ``type`` values, to tell a record event's dict before it is parsed.
RECORD_EVENT_TYPES = frozenset(str(cls.model_fields["type"].default) for cls in RECORD_EVENTS)


def _fold_context(state: IncidentState, new: Sequence[Event]) -> IncidentState:
    kept = [e for e in new if not isinstance(e, RECORD_EVENTS)]
    if len(kept) < len(new) and not has_context(state):
        # The incident's first events name its sender and its id, whatever their type.
        return fold(new, state)
    return fold(kept, state) if kept else state


def has_context(state: IncidentState) -> bool:
    """Whether a record event (RECORD_EVENTS) would change nothing but the state's
    records: the incident's sender and id are known."""
    return state.source is not None and state.incident_id is not None


_CONTEXT_FOLDS: IncidentMemo[IncidentState] = IncidentMemo(IncidentState, _fold_context)


def fold_context_through(
    dicts: Sequence[Mapping[str, Any]],
) -> tuple[IncidentState, Event]:
    """Like :func:`fold_through`, without applying vital signs and ECGs after the first
    events: the context a message about one of them reads (patient, visit, destination,
    cancellation, sender), not the incident's records. The state's ``vitals``,
    ``ecgs``, ``event_ids`` and ``last_occurred_at`` are then incomplete: a mapping that
    reads them must use :func:`fold_through`. A monitor's stream then costs one parse
    per delivery instead of a fold that copies the state's growing lists."""
    return _CONTEXT_FOLDS.reduce(dicts)


def incident_source(state: IncidentState) -> str:
    """The system that produced the incident (see IncidentState.source), as messages
    name their sender; ``unknown`` before any event."""
    return state.source or "unknown"


def fold_events(dicts: Sequence[Mapping[str, Any]]) -> IncidentState:
    """Validate the events as canonical records and fold them; MappingError if invalid."""
    return fold_through(dicts)[0]


def event_patient_id(event: Mapping[str, Any]) -> str | None:
    """The patient an event is about (``patient_ref`` or ``data.patient_id``), or None."""
    data = event.get("data")
    patient_id = event.get("patient_ref") or (
        data.get("patient_id") if isinstance(data, Mapping) else None
    )
    return str(patient_id) if patient_id is not None else None
