"""The contract between the delivery worker and every transport.

A connector moves bytes and reads the partner's protocol reply; it knows no medicine.
The worker calls :meth:`Connector.send` once per attempt and records the returned
:class:`SendResult`; the outcome decides what happens next (done, retry, dead letter).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

__all__ = [
    "DEFAULT_IN_FLIGHT",
    "Connector",
    "ConnectorSettings",
    "Outbound",
    "Outcome",
    "SendResult",
    "truncate",
]

RESPONSE_KEEP = 4096  # bytes of a partner reply kept in the attempt record
DEFAULT_IN_FLIGHT = 16  # a destination's max_in_flight unless its connector says otherwise


class Outcome(StrEnum):
    DELIVERED = "delivered"
    TRANSIENT = "transient"  # retry on the destination's schedule
    PERMANENT = "permanent"  # park as dead: resending unchanged would fail again


@dataclass(frozen=True, slots=True)
class Outbound:
    """One attempt's input: the stored payload and the identities a receiver dedupes on."""

    delivery_id: int
    message_id: str  # stable across retries (MSH-10, Bundle id, X-Hub-Message-Id)
    destination: str
    payload: bytes
    content_type: str
    attempt: int  # 1 for the first attempt
    incident_id: str
    correlation_id: str | None
    event_type: str


@dataclass(frozen=True, slots=True)
class SendResult:
    outcome: Outcome
    status: str | None = None  # protocol status as the partner said it: "HTTP 503", "AE"
    response: str | None = None  # the reply, truncated to RESPONSE_KEEP
    error: str | None = None  # why it did not succeed, for people
    error_class: str | None = None  # stable machine label: "timeout", "http_5xx", "refused"
    retry_after: float | None = None  # seconds the partner asked us to wait


class ConnectorSettings(BaseModel):
    """Base of each connector's own settings spec; unknown keys are configuration errors."""

    # Settings hold secrets (tokens, proxy credentials): errors never echo the input.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


class Connector(abc.ABC):
    """A transport to one destination; one instance per configured destination.

    ``start`` is awaited before the first send and ``close`` at shutdown (it must be
    safe to call twice). ``send`` must not raise for partner or network failures: it
    reports them as a TRANSIENT or PERMANENT result. An exception escaping ``send`` is
    a bug in the connector; the worker records it as a transient failure.
    """

    settings_model: ClassVar[type[ConnectorSettings]]

    def __init__(self, name: str, settings: Any) -> None:
        self.name = name
        self.settings = settings

    @classmethod
    def default_in_flight(cls, settings: Any) -> int:
        """A destination's ``max_in_flight`` when hub.yaml gives none: its sends at once."""
        return DEFAULT_IN_FLIGHT

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Open pools or connections; the default needs none."""

    @abc.abstractmethod
    async def send(self, message: Outbound) -> SendResult:
        """Deliver one message and classify the partner's reply."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release what ``start`` opened."""


def truncate(text: str | bytes | None, limit: int = RESPONSE_KEEP) -> str | None:
    """Keep attempt records bounded whatever a partner sends back."""
    if text is None:
        return None
    if isinstance(text, bytes):
        text = text[:limit].decode("utf-8", errors="replace")
    return text if len(text) <= limit else text[:limit] + "…"
