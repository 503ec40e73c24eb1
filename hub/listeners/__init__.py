"""Sources that listen on a socket and hand what they receive to the ingestor.

A listener is one module holding its settings spec, its implementation and one
``@register("listener", name)`` line; ``listeners:`` in hub.yaml declares instances and
the runtime starts them after the ingest writer and stops them before it. The contract
every listener keeps: acknowledge the sender only after the store commit, and keep
whatever it could not accept as rejected.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from hub.engine.ingest import Ingestor

__all__ = ["Listener", "ListenerSettings"]


class ListenerSettings(BaseModel):
    """Base of each listener's own settings spec; unknown keys are configuration errors."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


class Listener(abc.ABC):
    """One configured listener; ``start`` binds and returns, ``stop`` is safe twice."""

    settings_model: ClassVar[type[ListenerSettings]]

    def __init__(self, name: str, settings: Any, ingestor: Ingestor) -> None:
        self.name = name
        self.settings = settings
        self.ingestor = ingestor

    @abc.abstractmethod
    async def start(self) -> None:
        """Bind and begin accepting; raise if the address cannot be bound."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Stop accepting and close connections; unacknowledged messages are resent."""

    @property
    @abc.abstractmethod
    def port(self) -> int:
        """The bound port (useful when configured as 0)."""
