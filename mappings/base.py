"""The contract of a mapping: a pure function from a canonical event to target bytes.

Mappings do no I/O and read no clock: the message id, the time and the incident's
folded state are handed in through :class:`MappingContext`, so the same input always
gives the same bytes and golden files can pin them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = ["MappingContext", "MappingError", "MappingFunction", "NothingToSend", "Payload"]


class MappingError(ValueError):
    """The event cannot be expressed in the target format; resending will not help."""

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path


class NothingToSend(Exception):
    """This event means nothing to this destination (an ADT route seeing an event about
    another hospital's patient, say). The delivery ends as ``skipped``, with the reason."""


@dataclass(frozen=True, slots=True)
class Payload:
    body: bytes
    content_type: str


@dataclass(frozen=True, slots=True)
class MappingContext:
    """Everything a mapping may need besides the event itself."""

    message_id: str
    created_at: datetime  # when the delivery was created; the mapping's "now"
    destination: str
    options: Mapping[str, Any] = field(default_factory=dict)  # route/destination overrides
    incident_events: tuple[Mapping[str, Any], ...] = ()  # earlier events of the incident


MappingFunction = Callable[[Mapping[str, Any], MappingContext], Payload]
"""A registered mapping may carry two attributes the engine reads:

- ``needs_incident = True``: the worker loads the incident's earlier events into
  ``ctx.incident_events`` (one indexed read per delivery);
- ``options_model``: a pydantic model of the route ``options`` it accepts, so that
  `hub check` reports a bad option before anything is sent.
"""
