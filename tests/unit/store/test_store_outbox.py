"""The outbox state machine: claim queue heads under a lease, finish, recover,
resend. FIFO per (destination, ordering key); different keys in parallel."""

from __future__ import annotations

import time
from typing import Any

import pytest
from sqlalchemy import event
from storekit import Records, attempt_rows, audit_rows, delivery_rows, finished

from hub.store.records import DeliveryStatus
from hub.store.store import QueueStat, ResendError, Store
from hub.testing.rows import status_counts

PENDING, IN_FLIGHT = DeliveryStatus.PENDING, DeliveryStatus.IN_FLIGHT
DELIVERED, DEAD = DeliveryStatus.DELIVERED, DeliveryStatus.DEAD


def seed(store: Store, records: Records, layout: list[tuple[str, str]]) -> dict[str, int]:
    """Ingest one event per (event id, key), in order; event id → delivery id."""
    for event_id, key in layout:
        store.ingest([records.job(records.event(event_id, key=key))])
    return {r["event_id"]: r["id"] for r in delivery_rows(store)}


def status_of(store: Store) -> dict[int, str]:
    return {r["id"]: r["status"] for r in delivery_rows(store)}


def test_claim_takes_only_the_head_of_each_key(store: Store, records: Records) -> None:
    ids = seed(store, records, [("a1", "A"), ("a2", "A"), ("b1", "B"), ("a3", "A"), ("b2", "B")])
    now = time.time()
    claimed = store.claim("w1", limit=10, lease_seconds=30, now=now)
    assert [c.id for c in claimed] == [ids["a1"], ids["b1"]]
    head = claimed[0]
    assert (head.event_id, head.ordering_key, head.destination) == ("a1", "A", "his")
    assert head.attempts == 0
    assert head.payload is None
    assert head.event is not None and head.event["event_id"] == "a1"
    rows = {r["id"]: r for r in delivery_rows(store)}
    assert rows[ids["a1"]]["status"] == "in_flight"
    assert rows[ids["a1"]]["claimed_by"] == "w1"
    assert rows[ids["a1"]]["lease_until"] == pytest.approx(now + 30)
    assert rows[ids["a2"]]["status"] == "pending"
    # the heads are in flight: the rest of each key waits
    assert store.claim("w2", limit=10, lease_seconds=30) == []


def test_claim_respects_the_limit_oldest_first(store: Store, records: Records) -> None:
    ids = seed(store, records, [(f"e{n}", f"K{n}") for n in range(5)])
    claimed = store.claim("w1", limit=2, lease_seconds=30)
    assert [c.id for c in claimed] == [ids["e0"], ids["e1"]]
    assert [c.id for c in store.claim("w2", limit=10, lease_seconds=30)] == [
        ids["e2"],
        ids["e3"],
        ids["e4"],
    ]


def test_each_destination_has_its_own_queue_per_key(store: Store, records: Records) -> None:
    store.ingest([records.job(records.event("e1", key="K", destinations=("his", "cpc")))])
    store.ingest([records.job(records.event("e2", key="K", destinations=("his", "cpc")))])
    claimed = store.claim("w1", limit=10, lease_seconds=30)
    assert sorted((c.event_id, c.destination) for c in claimed) == [("e1", "cpc"), ("e1", "his")]


def test_claim_can_take_one_destination(store: Store, records: Records) -> None:
    store.ingest([records.job(records.event("e1", destinations=("his", "cpc")))])
    claimed = store.claim("w1", limit=10, lease_seconds=30, destination="cpc")
    assert [c.destination for c in claimed] == ["cpc"]
    assert store.claim("w1", limit=10, lease_seconds=30, destination="nowhere") == []
    assert [c.destination for c in store.claim("w1", limit=10, lease_seconds=30)] == ["his"]


def test_a_retrying_head_blocks_its_key_until_due(store: Store, records: Records) -> None:
    ids = seed(store, records, [("a1", "A"), ("a2", "A"), ("b1", "B")])
    now = time.time()
    heads = store.claim("w1", limit=10, lease_seconds=30, now=now)
    store.finish(
        [
            finished(ids["a1"], "w1", PENDING, next_attempt_at=now + 60, error="busy"),
            finished(ids["b1"], "w1", DELIVERED),
        ]
    )
    assert [h.id for h in heads] == [ids["a1"], ids["b1"]]
    # a2 is due but must not overtake its head
    assert store.claim("w1", limit=10, lease_seconds=30, now=now + 1) == []
    again = store.claim("w1", limit=10, lease_seconds=30, now=now + 61)
    assert [(c.id, c.attempts) for c in again] == [(ids["a1"], 1)]


def test_an_expired_lease_is_claimable_again(store: Store, records: Records) -> None:
    ids = seed(store, records, [("a1", "A")])
    now = time.time()
    assert [c.id for c in store.claim("w1", limit=5, lease_seconds=10, now=now)] == [ids["a1"]]
    assert store.claim("w2", limit=5, lease_seconds=10, now=now + 5) == []
    taken = store.claim("w2", limit=5, lease_seconds=10, now=now + 11)
    assert [c.id for c in taken] == [ids["a1"]]
    assert delivery_rows(store)[0]["claimed_by"] == "w2"
    # the first worker wakes up late: its attempt is recorded, the row is not touched
    store.finish([finished(ids["a1"], "w1", DELIVERED)])
    assert status_of(store) == {ids["a1"]: "in_flight"}
    assert len(attempt_rows(store, ids["a1"])) == 1
    store.finish([finished(ids["a1"], "w2", DELIVERED, number=1)])
    assert status_of(store) == {ids["a1"]: "delivered"}


def test_a_renewed_lease_is_not_taken_over(store: Store, records: Records) -> None:
    ids = seed(store, records, [("a1", "A"), ("b1", "B")])
    now = time.time()
    assert len(store.claim("w1", limit=5, lease_seconds=10, now=now)) == 2
    renewed = store.renew("w1", [ids["a1"]], lease_seconds=10, now=now + 8)
    assert renewed == 1
    taken = store.claim("w2", limit=5, lease_seconds=10, now=now + 11)
    assert [c.id for c in taken] == [ids["b1"]]  # a1's lease runs to now + 18
    rows = {r["id"]: r for r in delivery_rows(store)}
    assert rows[ids["a1"]]["lease_until"] == pytest.approx(now + 18)
    assert (rows[ids["a1"]]["claimed_by"], rows[ids["b1"]]["claimed_by"]) == ("w1", "w2")
    # b1 went to w2 when its lease ended: w1 renews it no more, nor a finished a1
    store.finish([finished(ids["a1"], "w1", DELIVERED)])
    assert store.renew("w1", [ids["a1"], ids["b1"]], lease_seconds=10, now=now + 12) == 0
    assert {r["id"]: r["lease_until"] for r in delivery_rows(store)} == {
        ids["a1"]: None,
        ids["b1"]: pytest.approx(now + 21),
    }


def test_dead_rows_do_not_block_their_key(store: Store, records: Records) -> None:
    ids = seed(store, records, [("a1", "A"), ("a2", "A")])
    store.claim("w1", limit=5, lease_seconds=30)
    store.finish([finished(ids["a1"], "w1", DEAD, error="refused")])
    assert [c.id for c in store.claim("w1", limit=5, lease_seconds=30)] == [ids["a2"]]


def test_finish_tells_whether_a_queue_still_holds_open_deliveries(
    store: Store, records: Records
) -> None:
    ids = seed(store, records, [("a1", "A"), ("a2", "A"), ("b1", "B")])
    store.claim("w1", limit=5, lease_seconds=30)  # a1 and b1; a2 waits behind a1
    destination = delivery_rows(store)[0]["destination"]
    b1 = [finished(ids["b1"], "w1", DELIVERED)]
    assert store.finish(b1, queues=[(destination, "B")]) is False
    a1 = [finished(ids["a1"], "w1", DELIVERED)]
    assert store.finish(a1, queues=[(destination, "A"), (destination, "B")]) is True
    assert store.finish([], queues=[(destination, "A")]) is False  # nothing recorded
    assert status_of(store) == {
        ids["a1"]: "delivered",
        ids["a2"]: "pending",
        ids["b1"]: "delivered",
    }


def test_finish_records_each_outcome(store: Store, records: Records) -> None:
    ids = seed(store, records, [("ok", "K1"), ("retry", "K2"), ("dead", "K3")])
    now = time.time()
    store.claim("w1", limit=5, lease_seconds=30, now=now)
    store.finish(
        [
            finished(ids["ok"], "w1", DELIVERED, payload=b'{"mapped":1}'),
            finished(ids["retry"], "w1", PENDING, next_attempt_at=now + 5, error="HTTP 503"),
            finished(ids["dead"], "w1", DEAD, error="refused with 400"),
        ]
    )
    rows = {r["event_id"]: r for r in delivery_rows(store)}
    assert rows["ok"]["status"] == "delivered"
    assert rows["ok"]["delivered_at"] is not None
    assert rows["ok"]["payload"] == b'{"mapped":1}'
    assert rows["ok"]["content_type"] == "application/json"
    assert rows["ok"]["lease_until"] is None
    assert rows["retry"]["status"] == "pending"
    assert rows["retry"]["next_attempt_at"] == pytest.approx(now + 5)
    assert rows["retry"]["last_error"] == "HTTP 503"
    assert rows["retry"]["delivered_at"] is None
    assert rows["dead"]["status"] == "dead"
    assert rows["dead"]["last_error"] == "refused with 400"
    assert {r["attempts"] for r in rows.values()} == {1}
    [attempt] = attempt_rows(store, ids["retry"])
    assert (attempt["number"], attempt["worker"], attempt["outcome"]) == (1, "w1", "transient")
    assert (attempt["status"], attempt["error_class"]) == ("HTTP 503", "http_5xx")
    assert attempt["latency_ms"] == 12.5


def test_a_mapped_payload_is_reused_on_retry(store: Store, records: Records) -> None:
    ids = seed(store, records, [("e1", "K")])
    now = time.time()
    store.claim("w1", limit=5, lease_seconds=30, now=now)
    store.finish([finished(ids["e1"], "w1", PENDING, payload=b"MSH|1", next_attempt_at=now)])
    [again] = store.claim("w1", limit=5, lease_seconds=30, now=now + 1)
    assert (again.payload, again.content_type, again.event) == (b"MSH|1", "application/json", None)
    assert again.attempts == 1
    # A retry that sends the stored payload records no payload: the stored one stays.
    store.finish([finished(ids["e1"], "w1", PENDING, number=2, next_attempt_at=now + 1)])
    [third] = store.claim("w1", limit=5, lease_seconds=30, now=now + 2)
    assert (third.payload, third.content_type, third.attempts) == (
        b"MSH|1",
        "application/json",
        2,
    )


def test_recover_returns_interrupted_claims(store: Store, records: Records) -> None:
    ids = seed(store, records, [("a1", "A"), ("b1", "B"), ("c1", "C")])
    store.claim("hostA:11:x", limit=1, lease_seconds=300)
    store.claim("hostB:22:y", limit=1, lease_seconds=300)
    assert status_of(store) == {
        ids["a1"]: "in_flight",
        ids["b1"]: "in_flight",
        ids["c1"]: "pending",
    }
    assert store.recover() == 2
    assert set(status_of(store).values()) == {"pending"}
    assert store.recover() == 0


def test_resend_of_a_dead_delivery_keeps_its_message_id(store: Store, records: Records) -> None:
    ids = seed(store, records, [("e1", "K")])
    store.claim("w1", limit=5, lease_seconds=30)
    store.finish([finished(ids["e1"], "w1", DEAD, number=3, payload=b"old mapping")])
    before = delivery_rows(store)[0]
    store.resend(ids["e1"], actor="ops:alice")
    after = delivery_rows(store)[0]
    assert after["message_id"] == before["message_id"]
    assert (after["status"], after["attempts"]) == ("pending", 0)
    assert after["payload"] == b"old mapping"
    [audit] = audit_rows(store)
    assert (audit["actor"], audit["action"], audit["subject"]) == (
        "ops:alice",
        "delivery.resend",
        str(ids["e1"]),
    )
    assert audit["details"] == {"remap": False}
    [again] = store.claim("w1", limit=5, lease_seconds=30)
    assert (again.id, again.message_id, again.attempts) == (ids["e1"], before["message_id"], 0)


def test_resend_with_remap_drops_the_payload(store: Store, records: Records) -> None:
    ids = seed(store, records, [("e1", "K")])
    store.claim("w1", limit=5, lease_seconds=30)
    store.finish([finished(ids["e1"], "w1", DELIVERED, payload=b"old mapping")])
    store.resend(ids["e1"], actor="ops", remap=True)
    row = delivery_rows(store)[0]
    assert (row["status"], row["payload"], row["delivered_at"]) == ("pending", None, None)
    [again] = store.claim("w1", limit=5, lease_seconds=30)
    assert again.event is not None and again.event["event_id"] == "e1"
    assert audit_rows(store)[0]["details"] == {"remap": True}


def test_resend_refuses_queued_and_unknown_deliveries(store: Store, records: Records) -> None:
    ids = seed(store, records, [("a1", "A"), ("b1", "B")])
    store.claim("w1", limit=1, lease_seconds=30)
    with pytest.raises(ResendError, match="is still in_flight"):
        store.resend(ids["a1"], actor="ops")
    with pytest.raises(ResendError, match="is still pending"):
        store.resend(ids["b1"], actor="ops")
    with pytest.raises(ResendError, match="no delivery 999999"):
        store.resend(999999, actor="ops")
    assert audit_rows(store) == []


def test_queue_stats_and_status_counts(store: Store, records: Records) -> None:
    store.ingest([records.job(records.event("e1", key="A", destinations=("his", "cpc")))])
    first = records.clock
    store.ingest([records.job(records.event("e2", key="A"))])
    store.ingest([records.job(records.event("e3", key="B"))])
    ids = {(r["event_id"], r["destination"]): r["id"] for r in delivery_rows(store)}
    store.claim("w1", limit=1, lease_seconds=30, destination="cpc")
    assert store.queue_stats() == [
        QueueStat("cpc", pending=0, in_flight=1, oldest_created_at=first),
        QueueStat("his", pending=3, in_flight=0, oldest_created_at=first),
    ]
    store.finish([finished(ids[("e1", "cpc")], "w1", DEAD)])
    assert status_counts(store) == {"pending": 3, "dead": 1}
    assert [s.destination for s in store.queue_stats()] == ["his"]


def test_sqlite_claims_probe_indexes_and_never_scan_a_table(store: Store) -> None:
    """A claim must cost the same however many events and deliveries the file holds:
    every step of its plan is an index search, or a read of the partial index that holds
    only open rows (claiming for every destination). (A bare RETURNING correlation once
    made SQLite scan the whole events table for each claimed row.)"""
    if not store.sqlite:
        pytest.skip("SQLite's plan; PostgreSQL's is pinned by the two-worker test")
    raw = store.engine.raw_connection()
    try:
        for only_one_destination, sql in store._claim_sql.items():
            params: list[object] = [1.0, "w", 1.0, 1.0, 1.0]
            if only_one_destination:
                params.append("his")
            plan = raw.execute(f"EXPLAIN QUERY PLAN {sql}", [*params, 10]).fetchall()
            steps = [row[3] for row in plan]
            scans = [s for s in steps if s.startswith("SCAN")]
            assert scans in ([], ["SCAN d USING INDEX ix_deliveries_open"]), steps
            assert any(s.startswith("SEARCH b USING INDEX") for s in steps), steps
    finally:
        raw.close()


def test_sqlite_browse_and_sweep_read_deliveries_through_an_index(
    store: Store, records: Records
) -> None:
    """Showing a message, the start-up sweep and the queue figures must not read every
    delivery ever made: each statement on deliveries searches an index (the sweep and
    the figures the partial one over open rows)."""
    if not store.sqlite:
        pytest.skip("SQLite's plans")
    seed(store, records, [("e1", "K"), ("e2", "K")])
    inbound_id = delivery_rows(store)[0]["inbound_id"]
    statements: list[tuple[str, Any]] = []

    def seen(_conn: Any, _cursor: Any, sql: str, params: Any, *_: Any) -> None:
        if "deliveries" in sql:
            statements.append((sql, params))

    event.listen(store.engine, "before_cursor_execute", seen)
    try:
        assert store.get_message(inbound_id, actor="test") is not None
        store.queue_stats()
        store.recover()
        store.recover("w1")
    finally:
        event.remove(store.engine, "before_cursor_execute", seen)
    assert len(statements) == 4
    raw = store.engine.raw_connection()
    try:
        for sql, params in statements:
            steps = [row[3] for row in raw.execute(f"EXPLAIN QUERY PLAN {sql}", params)]
            assert any("deliveries USING INDEX" in s for s in steps), (sql, steps)
            assert not [s for s in steps if s == "SCAN deliveries"], (sql, steps)
    finally:
        raw.close()
