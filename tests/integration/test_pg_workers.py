"""Scale-out on PostgreSQL: two `hub worker` processes drain one outbox.

Claims use ``FOR UPDATE SKIP LOCKED``; this checks from the attempts table that no
delivery was ever held by both workers at once, that each was delivered exactly once
(as the hub recorded it), that every key kept its order, and that both workers worked.
"""

from __future__ import annotations

import hashlib
import itertools
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hubkit import Webhook
from sqlalchemy import select

from hub.ids import new_id
from hub.store.records import IngestJob, NewDelivery, NewEvent
from hub.store.store import Store
from hub.store.tables import attempts, deliveries
from hub.testing.process import GRACEFUL_EXIT, HubProcess, start_worker, write_config
from hub.testing.rows import status_counts

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

DELIVERIES = 5000
KEYS = 100
RUN = 10  # consecutive events of one incident: a claim in plain id order would take several
INGEST_BATCH = 500
DRAIN_TIMEOUT = 45.0
WORKERS = ("w1", "w2")


def _job(i: int, received_at: float) -> IngestJob:
    incident = f"I{(i // RUN) % KEYS}"
    body: dict[str, Any] = {
        "event_id": f"e{i}",
        "type": "incident.cancelled",
        "incident_id": incident,
        "occurred_at": "2026-11-25T08:00:00+08:00",
        "source": "dispatch",
        "data": {"at": "2026-11-25T08:00:00+08:00", "reason": "load"},
    }
    raw = orjson.dumps(body)
    event = NewEvent(
        event_id=f"e{i}",
        type="incident.cancelled",
        incident_id=incident,
        patient_ref=None,
        correlation_id=None,
        source="dispatch",
        occurred_at=received_at,
        body=body,
        body_sha256=hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest(),
        deliveries=(
            NewDelivery(
                message_id=new_id(received_at),
                route="all",
                mapping="canonical-json",
                destination="hook",
                ordering_key=f"incident:{incident}",
            ),
        ),
    )
    return IngestJob(
        inbound_id=new_id(received_at),
        received_at=received_at,
        channel="test",
        source="dispatch",
        content_type="application/json",
        raw=raw,
        events=(event,),
    )


@pytest.fixture
def store(postgres_url: str) -> Iterator[Store]:
    opened = Store.open(postgres_url, migrate=True)
    try:
        yield opened
    finally:
        opened.close()


def _wait_drained(store: Store, workers: list[HubProcess]) -> None:
    deadline = time.monotonic() + DRAIN_TIMEOUT
    while True:
        counts = status_counts(store)
        if counts.get("delivered", 0) == DELIVERIES:
            return
        for w in workers:
            assert w.alive(), f"{w.describe()} exited; log:\n{w.log_tail()}"
        assert time.monotonic() < deadline, f"not drained: {counts}"
        time.sleep(0.1)


def test_two_workers_share_the_outbox_without_double_claims(
    tmp_path: Path, postgres_url: str, store: Store, webhook: Webhook
) -> None:
    receiver, hook_url = webhook.twin, webhook.url
    for start in range(0, DELIVERIES, INGEST_BATCH):
        now = time.time()
        outcomes = store.ingest([_job(i, now) for i in range(start, start + INGEST_BATCH)])
        assert all(o.answers and not o.conflicts for o in outcomes)

    config = write_config(
        tmp_path,
        {
            "database_url": postgres_url,
            # Small claims, so that the second worker finds heads the first left.
            "worker": {"poll_interval": 0.05, "batch_size": 10},
            "destinations": {"hook": {"type": "http", "url": hook_url}},
            "routes": [{"name": "all", "destination": "hook"}],
        },
    )
    workers: list[HubProcess] = []
    try:
        for name in WORKERS:
            workers.append(start_worker(config, name=name))
        _wait_drained(store, workers)
        for w in workers:
            assert w.terminate() in GRACEFUL_EXIT, w.log_tail()
    finally:
        for w in workers:
            w.kill()

    with store.engine.connect() as conn:
        rows = conn.execute(
            select(deliveries.c.id, deliveries.c.message_id, deliveries.c.ordering_key)
        ).all()
        tries = conn.execute(
            select(
                attempts.c.delivery_id,
                attempts.c.worker,
                attempts.c.started_at,
                attempts.c.latency_ms,
                attempts.c.outcome,
            )
        ).all()
    assert len(rows) == DELIVERIES

    # Every message reached the partner.
    received = receiver.accepted_ids()
    assert {r.message_id for r in rows} <= set(received)

    # No delivery was held by two workers at once; each was delivered exactly once.
    by_delivery: dict[int, list[Any]] = defaultdict(list)
    for a in tries:
        by_delivery[a.delivery_id].append(a)
    for delivery_id, its in by_delivery.items():
        assert sum(a.outcome == "delivered" for a in its) == 1, its
        spans = [(a.started_at, a.started_at + a.latency_ms / 1000, a.worker) for a in its]
        for (s1, e1, w1), (s2, e2, w2) in itertools.combinations(spans, 2):
            assert w1 == w2 or e1 <= s2 or e2 <= s1, f"delivery {delivery_id}: {spans}"
    assert set(by_delivery) == {r.id for r in rows}

    # Per key, strictly one at a time in id (ingest) order: each delivery's first attempt
    # began after the previous delivery of its key had its last attempt over.
    spans_of = {
        d: (min(a.started_at for a in its), max(a.started_at + a.latency_ms / 1000 for a in its))
        for d, its in by_delivery.items()
    }
    by_key: dict[str, list[int]] = defaultdict(list)
    for r in sorted(rows, key=lambda r: r.id):
        by_key[r.ordering_key].append(r.id)
    for key, ids in by_key.items():
        for earlier, later in itertools.pairwise(ids):
            assert spans_of[earlier][1] <= spans_of[later][0], f"{key}: {earlier} and {later}"

    # And the partner first accepted them in that order.
    key_of = {r.message_id: (r.ordering_key, r.id) for r in rows}
    seen: dict[str, list[int]] = defaultdict(list)
    for message_id in received:
        key, delivery_id = key_of[message_id]
        seen[key].append(delivery_id)
    assert len(seen) == KEYS
    for key, ids in seen.items():
        assert ids == sorted(ids), f"{key} out of order"

    # Both workers took part.
    assert {a.worker for a in tries} == set(WORKERS)
