"""The incident as a mapping sees it: the history up to the delivered event, folded.

Shared by every mapping with ``needs_incident = True`` (FHIR, HL7 v2), so they all
describe an incident the same way: parsing and folding the example incident costs
~0.2 ms.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from hub.model.errors import EventValidationError
from hub.model.events import Event, parse_events
from hub.model.state import IncidentState, fold
from mappings.base import MappingError

__all__ = [
    "event_patient_id",
    "events_through",
    "fold_events",
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


def fold_events(dicts: Sequence[Mapping[str, Any]]) -> IncidentState:
    """Validate the events as canonical records and fold them; MappingError if invalid."""
    return fold(parse_incident(dicts))


def incident_source(dicts: Sequence[Mapping[str, Any]]) -> str:
    """The producing system of the incident: the source of its call, else of its first event."""
    return next(
        (str(e["source"]) for e in dicts if e.get("type") == "call.received"),
        str(dicts[0].get("source", "unknown")) if dicts else "unknown",
    )


def event_patient_id(event: Mapping[str, Any]) -> str | None:
    """The patient an event is about (``patient_ref`` or ``data.patient_id``), or None."""
    data = event.get("data")
    patient_id = event.get("patient_ref") or (
        data.get("patient_id") if isinstance(data, Mapping) else None
    )
    return str(patient_id) if patient_id is not None else None
