"""Plain records passed across the store seam; no SQLAlchemy types leak out of the store.

The records built once or more per message are named tuples: as immutable as frozen
dataclasses, and built in a fifth of the time (a frozen dataclass sets each field
through ``object.__setattr__``: ~2 µs for Claimed's 16 fields, against 0.4 µs).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple

__all__ = [
    "Claimed",
    "DeliveryStatus",
    "EventAnswer",
    "Finished",
    "IngestJob",
    "IngestOutcome",
    "NewDelivery",
    "NewEvent",
    "Rejected",
]


class DeliveryStatus(StrEnum):
    """The outbox state machine: pending → in_flight → delivered | pending (retry) | dead,
    or skipped when the mapping decided the event means nothing to the destination."""

    PENDING = "pending"
    IN_FLIGHT = "in_flight"
    DELIVERED = "delivered"
    DEAD = "dead"
    SKIPPED = "skipped"


class NewDelivery(NamedTuple):
    message_id: str
    route: str
    mapping: str
    destination: str
    ordering_key: str


class NewEvent(NamedTuple):
    event_id: str
    type: str
    incident_id: str
    patient_ref: str | None
    correlation_id: str | None
    source: str
    occurred_at: float
    body: dict[str, Any]
    body_sha256: str
    deliveries: tuple[NewDelivery, ...]


class IngestJob(NamedTuple):
    """One received body and the events and deliveries it causes: one unit of durability."""

    inbound_id: str
    received_at: float
    channel: str
    source: str | None
    content_type: str | None
    raw: bytes
    events: tuple[NewEvent, ...]


class Rejected(NamedTuple):
    """A body the hub could not accept; kept with the reason so nothing is lost."""

    inbound_id: str
    received_at: float
    channel: str
    source: str | None
    content_type: str | None
    raw: bytes
    errors: list[dict[str, str]]


class EventAnswer(NamedTuple):
    event_id: str
    inbound_id: str
    deliveries: tuple[tuple[str, str, str], ...]  # (message_id, destination, route)
    replayed: bool = False


class IngestOutcome(NamedTuple):
    """Either every event's answer, or a conflict (same event id, different body)."""

    answers: tuple[EventAnswer, ...] = ()
    conflicts: tuple[str, ...] = ()


class Claimed(NamedTuple):
    """A delivery leased to one worker; ``event`` is set only when it still needs mapping."""

    id: int
    message_id: str
    event_id: str
    incident_id: str
    correlation_id: str | None
    event_type: str
    route: str
    mapping: str
    destination: str
    ordering_key: str
    attempts: int
    created_at: float
    payload: bytes | None
    content_type: str | None
    event: dict[str, Any] | None
    # Events of the incident received up to created_at: what incident_events(incident_id,
    # until=created_at) would return, counted. Events are only ever added, so a history
    # of that length read earlier for the incident is that same history.
    history_size: int = 0


@dataclass(slots=True)
class Finished:
    """What one attempt did, and the delivery's state after it."""

    delivery_id: int
    number: int
    worker: str
    started_at: float
    latency_ms: float
    outcome: str
    new_status: DeliveryStatus
    next_attempt_at: float
    status: str | None = None
    response: str | None = None
    error_class: str | None = None
    error: str | None = None
    payload: bytes | None = None  # set when this attempt mapped the event
    content_type: str | None = None
