"""Helpers of the integration tests, imported as ``hubkit`` (pytest puts this folder on
sys.path): the hub API served in-process by uvicorn on loopback, twins beside it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import httpx

from hub.api.app import create_app
from hub.config.plan import Plan
from hub.runtime import HubRuntime
from sandbox.http_receiver import HttpReceiverTwin, ServerThread

T = TypeVar("T")

AT = "2026-11-25T08:00:00+08:00"

# Fast enough that retries take milliseconds; generous enough that nothing goes dead.
FAST_RETRY = {"initial_delay": 0.02, "multiplier": 1.5, "max_delay": 0.2, "max_attempts": 40}
FAST_WORKER = {"poll_interval": 0.02, "shutdown_grace": 5}


def cancelled(
    event_id: str, incident: str = "INC-1", *, source: str = "dispatch-tianjin", reason: str = "t"
) -> dict[str, Any]:
    """A minimal valid event."""
    return {
        "event_id": event_id,
        "type": "incident.cancelled",
        "incident_id": incident,
        "occurred_at": AT,
        "source": source,
        "data": {"at": AT, "reason": reason},
    }


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 30.0) -> T:
    """Poll ``probe`` until it returns something truthy; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.02)


class Webhook:
    """The webhook twin on a free loopback port."""

    def __init__(self, secret: str | None = None) -> None:
        self.twin = HttpReceiverTwin(secret=secret)
        self.server = ServerThread(self.twin.app).start()
        self.url = f"{self.server.url}/hook"


class Hub:
    """The hub API and its worker, in this process, on a free loopback port."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.runtime = HubRuntime(plan)
        self.server = ServerThread(create_app(self.runtime), lifespan=True).start()
        self.url = self.server.url
        self.client = httpx.Client(base_url=self.url, timeout=30)

    def stop(self) -> None:
        self.client.close()
        self.server.stop()

    def message(self, inbound_id: str, token: str | None = None) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        reply = self.client.get(f"/v1/messages/{inbound_id}", headers=headers)
        assert reply.status_code == 200, reply.text
        body: dict[str, Any] = reply.json()
        return body


def hub_config(database_url: str, webhook_url: str | None = None, **extra: Any) -> dict[str, Any]:
    """A hub.yaml as a mapping: one webhook destination taking every event, per incident."""
    config: dict[str, Any] = {
        "database_url": database_url,
        "worker": dict(FAST_WORKER),
        "retry_policies": {"default": dict(FAST_RETRY)},
        "destinations": {},
        "routes": [],
    }
    if webhook_url is not None:
        config["destinations"]["partner"] = {"type": "http", "url": webhook_url, "timeout": 5}
        config["routes"].append({"name": "all-to-partner", "destination": "partner"})
    config.update(extra)
    return config
