"""The message browser: keyset paging newest first, filters, audited detail reads."""

from __future__ import annotations

import time

from storekit import Records, audit_rows, delivery_rows, finished

from hub.store.records import DeliveryStatus, Rejected
from hub.store.store import Store


def fill(store: Store, records: Records) -> list[tuple[float, str]]:
    """Twelve messages, three of them received in the same instant; (received_at, id)."""
    seen = []
    same = records.tick()
    for n in range(12):
        at = same if n in (4, 5, 6) else None
        job = records.job(records.event(f"e{n}", incident=f"INC-{n % 2}"), received_at=at)
        store.ingest([job])
        seen.append((job.received_at, job.inbound_id))
    return seen


def test_pages_cover_every_message_once_newest_first(store: Store, records: Records) -> None:
    expected = [i for _, i in sorted(fill(store, records), reverse=True)]
    got: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = store.list_messages(limit=5, cursor=cursor)
        got.extend(m["id"] for m in page.items)
        pages += 1
        cursor = page.next_cursor
        if cursor is None:
            break
    assert got == expected
    assert pages == 3


def test_an_exact_last_page_has_no_cursor(store: Store, records: Records) -> None:
    fill(store, records)
    first = store.list_messages(limit=6)
    second = store.list_messages(limit=6, cursor=first.next_cursor)
    assert (len(first.items), len(second.items)) == (6, 6)
    assert second.next_cursor is None


def test_filters(store: Store, records: Records) -> None:
    seen = fill(store, records)
    at = records.tick()
    store.reject(Rejected("REJ1", at, "http", "dispatch", "application/json", b"{", []))
    by_incident = store.list_messages(incident_id="INC-1", limit=50).items
    assert sorted(m["id"] for m in by_incident) == sorted(
        i for n, (_, i) in enumerate(seen) if n % 2
    )
    rejected = store.list_messages(status="rejected", limit=50).items
    assert [(m["id"], m["status"]) for m in rejected] == [("REJ1", "rejected")]
    assert "raw" not in rejected[0], "the list view leaves bodies out"
    accepted = store.list_messages(status="accepted", limit=50).items
    assert len(accepted) == 12
    window = store.list_messages(since=seen[8][0], until=seen[10][0], limit=50).items
    assert [m["id"] for m in window] == [seen[9][1], seen[8][1]]


def test_get_message_has_events_deliveries_and_attempts_and_is_audited(
    store: Store, records: Records
) -> None:
    job = records.job(records.event("e1", destinations=("his", "cpc")), records.event("e2"))
    store.ingest([job])
    ids = {(r["event_id"], r["destination"]): r["id"] for r in delivery_rows(store)}
    store.claim("w1", limit=10, lease_seconds=30)
    now = time.time()
    store.finish(
        [
            finished(ids[("e1", "his")], "w1", DeliveryStatus.PENDING, next_attempt_at=now),
            finished(ids[("e1", "cpc")], "w1", DeliveryStatus.DELIVERED, payload=b"{}"),
        ]
    )
    store.claim("w1", limit=10, lease_seconds=30, now=now + 1)
    store.finish([finished(ids[("e1", "his")], "w1", DeliveryStatus.DELIVERED, number=2)])

    message = store.get_message(job.inbound_id, actor="ops:alice")
    assert message is not None
    assert (message["id"], message["raw"], message["status"]) == (
        job.inbound_id,
        job.raw,
        "accepted",
    )
    assert [e["event_id"] for e in message["events"]] == ["e1", "e2"]
    assert message["events"][0]["body"] == job.events[0].body
    deliveries = {(d["event_id"], d["destination"]): d for d in message["deliveries"]}
    assert set(deliveries) == {("e1", "his"), ("e1", "cpc"), ("e2", "his")}
    his = deliveries[("e1", "his")]
    assert [(a["number"], a["outcome"]) for a in his["attempt_log"]] == [
        (1, "transient"),
        (2, "delivered"),
    ]
    assert his["status"] == "delivered"
    assert deliveries[("e1", "cpc")]["payload"] == b"{}"
    assert [(a["number"], a["outcome"]) for a in deliveries[("e1", "cpc")]["attempt_log"]] == [
        (1, "delivered")
    ]
    # e2 waits behind e1 in the same (destination, key) queue: never tried yet
    assert deliveries[("e2", "his")]["attempt_log"] == []
    assert deliveries[("e2", "his")]["status"] == "pending"
    [audit] = audit_rows(store)
    assert (audit["actor"], audit["action"], audit["subject"]) == (
        "ops:alice",
        "message.read",
        job.inbound_id,
    )


def test_get_message_of_an_unknown_id_is_none(store: Store) -> None:
    assert store.get_message("NOPE", actor="ops") is None
