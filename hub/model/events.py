"""The event envelope: the one format every producer sends into the hub.

Each event type has its own envelope class whose `type` literal selects the data model, so a
whole batch validates in one pass of pydantic's JSON parser.
"""

from types import MappingProxyType
from typing import Annotated, Any, Generic, Literal, TypeAlias, TypeVar

import pydantic_core
from pydantic import (
    AwareDatetime,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from hub.model.base import CanonicalModel, Identifier
from hub.model.clinical import Assessment, Treatment
from hub.model.disposition import Destination, Handover
from hub.model.ecg import Ecg
from hub.model.errors import EventValidationError, FieldError
from hub.model.incident import Call, Cancellation, UnitDispatch, UnitStatusChange
from hub.model.patient import Patient
from hub.model.vitals import VitalsRecorded

__all__ = [
    "EVENT_CLASSES",
    "EVENT_TYPES",
    "AssessmentUpdated",
    "CallReceived",
    "DestinationAssigned",
    "EcgAcquired",
    "Event",
    "EventBatch",
    "EventEnvelope",
    "HandoverCompleted",
    "IncidentCancelled",
    "PatientIdentified",
    "TreatmentGiven",
    "UnitDispatched",
    "UnitStatusChanged",
    "VitalsRecordedEvent",
    "dump_event",
    "event_json_schema",
    "parse_events",
]

DataT = TypeVar("DataT", bound=CanonicalModel)

ShortLabel = Annotated[str, Field(min_length=1, max_length=64)]


class EventEnvelope(CanonicalModel, Generic[DataT]):
    """Fields common to every event; `data` holds the record of the event type."""

    event_id: Identifier  # unique per producer; a repeated id is a retry of the same event
    type: str
    incident_id: Identifier
    occurred_at: AwareDatetime  # when the fact happened at the source
    source: ShortLabel  # producing system, e.g. "dispatch-tianjin"
    correlation_id: ShortLabel | None = None
    data: DataT
    # For patient-scoped events, defaults to data.patient_id (validated after data).
    patient_ref: Identifier | None = Field(default=None, validate_default=True)

    @field_validator("patient_ref")
    @classmethod
    def _derive_patient_ref(cls, value: str | None, info: ValidationInfo) -> str | None:
        patient_id = getattr(info.data.get("data"), "patient_id", None)
        if patient_id is None:
            return value
        if value is None:
            return str(patient_id)
        if value != patient_id:
            raise PydanticCustomError(
                "patient_ref_mismatch",
                "patient_ref {ref} differs from data.patient_id {patient_id}",
                {"ref": value, "patient_id": patient_id},
            )
        return value


class CallReceived(EventEnvelope[Call]):
    type: Literal["call.received"] = "call.received"


class UnitDispatched(EventEnvelope[UnitDispatch]):
    type: Literal["unit.dispatched"] = "unit.dispatched"


class UnitStatusChanged(EventEnvelope[UnitStatusChange]):
    type: Literal["unit.status"] = "unit.status"


class PatientIdentified(EventEnvelope[Patient]):
    type: Literal["patient.identified"] = "patient.identified"


class AssessmentUpdated(EventEnvelope[Assessment]):
    type: Literal["assessment.updated"] = "assessment.updated"


class VitalsRecordedEvent(EventEnvelope[VitalsRecorded]):
    type: Literal["vitals.recorded"] = "vitals.recorded"


class EcgAcquired(EventEnvelope[Ecg]):
    type: Literal["ecg.acquired"] = "ecg.acquired"


class TreatmentGiven(EventEnvelope[Treatment]):
    type: Literal["treatment.given"] = "treatment.given"


class DestinationAssigned(EventEnvelope[Destination]):
    type: Literal["destination.assigned"] = "destination.assigned"


class HandoverCompleted(EventEnvelope[Handover]):
    type: Literal["handover.completed"] = "handover.completed"


class IncidentCancelled(EventEnvelope[Cancellation]):
    type: Literal["incident.cancelled"] = "incident.cancelled"


Event: TypeAlias = Annotated[
    CallReceived
    | UnitDispatched
    | UnitStatusChanged
    | PatientIdentified
    | AssessmentUpdated
    | VitalsRecordedEvent
    | EcgAcquired
    | TreatmentGiven
    | DestinationAssigned
    | HandoverCompleted
    | IncidentCancelled,
    Field(discriminator="type"),
]
"""Any event; pydantic picks the class from `type`."""

_CLASSES: tuple[type[EventEnvelope[Any]], ...] = (
    CallReceived,
    UnitDispatched,
    UnitStatusChanged,
    PatientIdentified,
    AssessmentUpdated,
    VitalsRecordedEvent,
    EcgAcquired,
    TreatmentGiven,
    DestinationAssigned,
    HandoverCompleted,
    IncidentCancelled,
)
EVENT_TYPES: tuple[str, ...] = tuple(str(cls.model_fields["type"].default) for cls in _CLASSES)
"""Every event type, in the usual order of an incident."""

EVENT_CLASSES = MappingProxyType(dict(zip(EVENT_TYPES, _CLASSES, strict=True)))
"""Event type -> envelope class."""


_NonEmptyEvents = Annotated[list[Event], Field(min_length=1)]


class EventBatch(CanonicalModel):
    """The `{"events": [...]}` form of a batch."""

    events: _NonEmptyEvents


_EVENT: TypeAdapter[Event] = TypeAdapter(Event)
_EVENT_LIST: TypeAdapter[list[Event]] = TypeAdapter(_NonEmptyEvents)
_BATCH: TypeAdapter[EventBatch] = TypeAdapter(EventBatch)
_BODY: TypeAdapter[list[Event] | EventBatch | Event] = TypeAdapter(
    Annotated[_NonEmptyEvents | EventBatch | Event, Field(union_mode="left_to_right")]
)

_BODY_SHAPE = 'the body must be an event object, an array of events, or {"events": [...]}'
_ALLOWED = ", ".join(EVENT_TYPES)


def parse_events(body: bytes | str) -> list[Event]:
    """Validate a JSON body holding one event, an array of events or {"events": [...]}.

    Raises EventValidationError listing every defect, with paths relative to the body
    ("events[i]..." for both batch forms).
    """
    try:
        parsed = _BODY.validate_json(body)
    except ValidationError as error:
        raise EventValidationError(_explain(body, error)) from None
    if isinstance(parsed, list):
        return parsed
    if isinstance(parsed, EventBatch):
        return list(parsed.events)
    return [parsed]


def dump_event(event: EventEnvelope[Any]) -> dict[str, Any]:
    """The JSON-ready dict of an event, without absent (None) fields."""
    return event.model_dump(mode="json", exclude_none=True)


def event_json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of one event, for publishing to producers."""
    schema = _EVENT.json_schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Event",
        **schema,
    }


def _explain(body: bytes | str, error: ValidationError) -> list[FieldError]:
    """Re-validate a failed body against the shape it was meant to have, for clean paths.

    The union used on the fast path reports each failure once per alternative; knowing the
    intended shape lets the error name exactly one path per defect.
    """
    details = error.errors(include_url=False)
    if details and details[0]["type"] in ("json_invalid", "string_unicode"):
        return [FieldError("", details[0]["msg"], details[0]["type"])]
    try:
        value = pydantic_core.from_json(body)
    except (ValueError, TypeError) as json_error:  # pragma: no cover - parsed above already
        return [FieldError("", f"Invalid JSON: {json_error}", "json_invalid")]
    if isinstance(value, list):
        adapter: TypeAdapter[Any] = _EVENT_LIST
        root: tuple[str | int, ...] = ("events",)
    elif isinstance(value, dict) and "events" in value and "type" not in value:
        adapter, root = _BATCH, ()
    elif isinstance(value, dict):
        adapter, root = _EVENT, ()
    else:
        return [FieldError("", _BODY_SHAPE, "body_type")]
    try:
        adapter.validate_json(body)
    except ValidationError as shaped:
        return [_field_error(root, detail) for detail in shaped.errors(include_url=False)]
    return [  # pragma: no cover - the alternatives agree on valid bodies
        _field_error((), detail) for detail in details
    ]


def _field_error(root: tuple[str | int, ...], detail: ErrorDetails) -> FieldError:
    loc = _without_tags(root + tuple(detail["loc"]))
    error_type = detail["type"]
    reason = detail["msg"]
    if error_type == "union_tag_invalid":
        loc = (*loc, "type")
        tag = detail.get("ctx", {}).get("tag")
        reason = f"unknown event type {tag!r}; allowed types: {_ALLOWED}"
    elif error_type == "union_tag_not_found":
        loc = (*loc, "type")
        reason = f"the event has no type; allowed types: {_ALLOWED}"
    elif error_type == "too_short" and loc == ("events",):
        reason = "the batch is empty: send at least one event"
    return FieldError(_path(loc), reason, error_type)


def _without_tags(loc: tuple[str | int, ...]) -> tuple[str | int, ...]:
    """Drop the discriminator labels pydantic inserts after an event's position."""
    kept: list[str | int] = []
    for index, part in enumerate(loc):
        at_event = index == 0 or (index == 2 and isinstance(loc[1], int))
        if at_event and isinstance(part, str) and part in EVENT_CLASSES:
            continue
        kept.append(part)
    return tuple(kept)


def _path(loc: tuple[str | int, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else part
    return path
