"""Crash safety end to end: SIGKILL the hub while it ingests and delivers, restart it on
the same SQLite file, and nothing a sender got a 202 for is lost.

The hub runs as a real process (``hub run``); the webhook twin runs in this process so
the test can read what it received. Senders behave as the README asks: an event without
a 202 is sent again, and the hub answers a repeat as it was first answered.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from hub.store.store import Store
from hub.store.tables import attempts, deliveries
from hub.testing.process import GRACEFUL_EXIT, HubProcess, start_hub, write_config
from hub.testing.rows import status_counts
from sandbox.http_receiver import HttpReceiverTwin, ServerThread

pytestmark = pytest.mark.slow

EVENTS = 2000
CLIENTS = 8
KILL_AFTER = 700  # accepted events before the SIGKILL
DRAIN_TIMEOUT = 30.0


def _event(i: int) -> dict[str, Any]:
    return {
        "event_id": f"e{i}",
        "type": "incident.cancelled",
        "incident_id": f"I{i % 50}",
        "occurred_at": "2026-11-25T08:00:00+08:00",
        "source": "dispatch",
        "data": {"at": "2026-11-25T08:00:00+08:00", "reason": "load"},
    }


class Senders:
    """CLIENTS threads posting events one per request; remembers what got a 202."""

    def __init__(self) -> None:
        self.accepted: dict[str, tuple[str, ...]] = {}  # event id -> message ids
        self.lock = threading.Lock()
        self.hub_down = threading.Event()

    def send(self, url: str, indexes: list[int]) -> None:
        """Post every event in ``indexes`` to the hub at ``url`` until it stops answering."""
        work: queue.SimpleQueue[int] = queue.SimpleQueue()
        for i in indexes:
            work.put(i)
        failures: list[BaseException] = []
        threads = [
            threading.Thread(target=self._client, args=(url, work, failures))
            for _ in range(CLIENTS)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if failures:
            raise failures[0]

    def _client(
        self, url: str, work: queue.SimpleQueue[int], failures: list[BaseException]
    ) -> None:
        try:
            with httpx.Client(base_url=url, timeout=10.0) as client:
                while not self.hub_down.is_set():
                    try:
                        i = work.get_nowait()
                    except queue.Empty:
                        return
                    event = _event(i)
                    try:
                        reply = client.post("/v1/events", json=event)
                    except httpx.TransportError:
                        # The hub died under this request: not accepted, whether or not
                        # the commit happened. Stop sending; the caller retries later.
                        self.hub_down.set()
                        return
                    assert reply.status_code == 202, reply.text
                    (answer,) = reply.json()["accepted"]
                    ids = tuple(d["message_id"] for d in answer["deliveries"])
                    assert ids, f"event {event['event_id']} caused no delivery"
                    with self.lock:
                        self.accepted[event["event_id"]] = ids
        except BaseException as exc:
            failures.append(exc)

    def count(self) -> int:
        with self.lock:
            return len(self.accepted)


@pytest.fixture
def twin() -> Iterator[tuple[HttpReceiverTwin, str]]:
    receiver = HttpReceiverTwin(secret="crash-test-secret")
    # A partner slower than the senders: a backlog builds and every send slot is busy, so
    # the kill always lands while deliveries are in flight.
    receiver.set_behaviour(delay=0.05)
    server = ServerThread(receiver.app).start()
    try:
        yield receiver, f"{server.url}/hook"
    finally:
        server.stop()


def _config(tmp_path: Path, hook_url: str) -> Path:
    return write_config(
        tmp_path,
        {
            "database_url": f"sqlite:///{tmp_path / 'hub.db'}",
            "worker": {"poll_interval": 0.05, "batch_size": 100},
            "retry_policies": {
                "default": {"initial_delay": 0.05, "max_delay": 0.5, "max_attempts": 20}
            },
            "destinations": {
                "hook": {"type": "http", "url": hook_url, "secret": "${CRASH_HOOK_SECRET}"}
            },
            "routes": [{"name": "all", "destination": "hook"}],
        },
    )


def _wait_for(
    twin: HttpReceiverTwin, message_ids: set[str], hub: HubProcess, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        missing = message_ids - set(twin.accepted_ids())
        if not missing:
            return
        if not hub.alive():
            raise AssertionError(f"the restarted hub exited; log:\n{hub.log_tail()}")
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{len(missing)} accepted deliveries never reached the twin; "
                f"hub log:\n{hub.log_tail()}"
            )
        time.sleep(0.05)


def test_sigkill_while_ingesting_and_delivering_loses_nothing(
    tmp_path: Path, twin: tuple[HttpReceiverTwin, str]
) -> None:
    receiver, hook_url = twin
    config = _config(tmp_path, hook_url)
    env = {"CRASH_HOOK_SECRET": "crash-test-secret"}
    database_url = f"sqlite:///{tmp_path / 'hub.db'}"

    # Phase 1: post concurrently, SIGKILL the hub mid-stream.
    with start_hub(config, env=env) as hub:
        senders = Senders()
        posting = threading.Thread(target=senders.send, args=(hub.url, list(range(EVENTS))))
        posting.start()
        try:
            deadline = time.monotonic() + 20
            while senders.count() < KILL_AFTER and posting.is_alive():
                assert time.monotonic() < deadline, f"hub too slow; log:\n{hub.log_tail()}"
                time.sleep(0.002)
            delivered_before_kill = len(receiver.accepted_ids())
            assert hub.kill() == -9
        finally:
            posting.join()
    accepted_before_kill = dict(senders.accepted)
    assert KILL_AFTER <= len(accepted_before_kill) < EVENTS, "the kill came too late"

    # The crash interrupted deliveries (claimed, perhaps sent, not recorded), or the test
    # would prove nothing about recovery.
    store = Store(database_url)
    try:
        counts = status_counts(store)
    finally:
        store.close()
    assert counts.get("in_flight", 0) > 0, f"no delivery was in flight: {counts}"
    assert delivered_before_kill < len(accepted_before_kill)

    # Phase 2: restart on the same file; resend everything that got no 202.
    with start_hub(config, env=env, log_name="hub-restart.log") as hub:
        senders.hub_down.clear()
        senders.send(hub.url, [i for i in range(EVENTS) if f"e{i}" not in senders.accepted])
        assert not senders.hub_down.is_set(), f"restarted hub failed; log:\n{hub.log_tail()}"
        assert len(senders.accepted) == EVENTS
        for event_id, ids in accepted_before_kill.items():
            assert senders.accepted[event_id] == ids
        expected = {m for ids in senders.accepted.values() for m in ids}
        _wait_for(receiver, expected, hub, DRAIN_TIMEOUT)
        assert hub.terminate() in GRACEFUL_EXIT, hub.log_tail()

    # The twin got every message id of every accepted event; a duplicate is only ever a
    # repeat of a message id it already had (the same delivery sent again).
    received = set(receiver.accepted_ids())
    assert expected <= received
    assert set(receiver.duplicates()) <= received
    assert receiver.state.bad_signatures == 0

    store = Store(database_url)
    try:
        with store.engine.connect() as conn:
            rows = conn.execute(
                select(deliveries.c.message_id, deliveries.c.status, func.count(attempts.c.id))
                .outerjoin(
                    attempts,
                    (attempts.c.delivery_id == deliveries.c.id)
                    & (attempts.c.outcome == "delivered"),
                )
                .group_by(deliveries.c.id)
            ).all()
    finally:
        store.close()
    # Exactly what was answered, no more: no event got a second set of deliveries; each
    # is delivered (none left in flight) and has the attempt that delivered it.
    assert {r.message_id for r in rows} == expected
    assert {r.status for r in rows} == {"delivered"}
    assert min(r[2] for r in rows) >= 1
