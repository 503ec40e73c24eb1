"""Real sockets on loopback: every server a test starts is stopped at teardown, and ports
are picked by the OS (port 0). The helpers live in ``hubkit``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hubkit import Hub, Webhook

from hub.config.plan import plan_from_mapping


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    try:
        yield hook
    finally:
        hook.server.stop()


@pytest.fixture
def start_hub() -> Iterator[Callable[[dict[str, Any]], Hub]]:
    """Start a hub from a hub.yaml mapping; every hub started is stopped at teardown."""
    started: list[Hub] = []

    def start(config: dict[str, Any]) -> Hub:
        hub = Hub(plan_from_mapping(config, env={}))
        started.append(hub)
        return hub

    try:
        yield start
    finally:
        for hub in reversed(started):
            hub.stop()
