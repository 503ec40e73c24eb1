"""Ingest: one transaction per group of bodies, idempotent on event id, nothing lost."""

from __future__ import annotations

import orjson
from sqlalchemy import select
from storekit import Records, counts, delivery_rows

from hub.store.records import EventAnswer, NewEvent, Rejected
from hub.store.store import Store
from hub.store.tables import events, inbound_messages


def first_answer(answer: EventAnswer) -> tuple[str, str, tuple[tuple[str, str, str], ...]]:
    return (answer.event_id, answer.inbound_id, answer.deliveries)


def planned(event: NewEvent) -> tuple[tuple[str, str, str], ...]:
    return tuple((d.message_id, d.destination, d.route) for d in event.deliveries)


def inbound(store: Store, inbound_id: str) -> dict[str, object]:
    with store.engine.connect() as conn:
        row = conn.execute(
            select(inbound_messages).where(inbound_messages.c.id == inbound_id)
        ).one()
        return dict(row._mapping)


def test_ingest_creates_the_inbound_message_events_and_deliveries(
    store: Store, records: Records
) -> None:
    e1 = records.event("e1", destinations=("his", "cpc"))
    e2 = records.event("e2", incident="INC-2")
    job = records.job(e1, e2)
    [outcome] = store.ingest([job])
    assert outcome.conflicts == ()
    assert [first_answer(a) for a in outcome.answers] == [
        ("e1", job.inbound_id, planned(e1)),
        ("e2", job.inbound_id, planned(e2)),
    ]
    assert not any(a.replayed for a in outcome.answers)
    assert counts(store) == {
        "inbound_messages": 1,
        "events": 2,
        "deliveries": 3,
        "attempts": 0,
        "audit_log": 0,
    }
    message = inbound(store, job.inbound_id)
    assert message["status"] == "accepted"
    assert message["raw"] == job.raw
    assert (message["event_count"], message["incident_id"]) == (2, "INC-1")
    rows = delivery_rows(store)
    assert [(r["message_id"], r["destination"], r["ordering_key"]) for r in rows] == [
        (e1.deliveries[0].message_id, "his", "incident:INC-1"),
        (e1.deliveries[1].message_id, "cpc", "incident:INC-1"),
        (e2.deliveries[0].message_id, "his", "incident:INC-2"),
    ]
    assert {r["status"] for r in rows} == {"pending"}
    assert {r["attempts"] for r in rows} == {0}
    assert {r["next_attempt_at"] for r in rows} == {job.received_at}
    with store.engine.connect() as conn:
        body = conn.execute(select(events.c.body).where(events.c.event_id == "e1")).scalar_one()
    assert body == e1.body


def test_a_replay_answers_as_the_first_time_and_creates_nothing(
    store: Store, records: Records
) -> None:
    e1 = records.event("e1", destinations=("his", "cpc"))
    [first] = store.ingest([records.job(e1)])
    before = counts(store)
    # The sender retries: same event, new request, new inbound id, new candidate message ids.
    again = records.event("e1", destinations=("his", "cpc"))
    [replay] = store.ingest([records.job(again)])
    assert [first_answer(a) for a in replay.answers] == [first_answer(a) for a in first.answers]
    assert [a.replayed for a in replay.answers] == [True]
    assert counts(store) == before


def test_a_body_with_new_and_seen_events_creates_only_the_new(
    store: Store, records: Records
) -> None:
    [first] = store.ingest([records.job(records.event("e1"))])
    job = records.job(records.event("e1"), records.event("e2"))
    [outcome] = store.ingest([job])
    assert [(a.event_id, a.replayed) for a in outcome.answers] == [("e1", True), ("e2", False)]
    assert first_answer(outcome.answers[0]) == first_answer(first.answers[0])
    assert outcome.answers[1].inbound_id == job.inbound_id
    assert counts(store)["events"] == 2
    assert counts(store)["deliveries"] == 2


def test_a_replay_of_events_first_brought_by_different_bodies(
    store: Store, records: Records
) -> None:
    # Each replayed event's deliveries are found by the body that first brought it.
    [one] = store.ingest([records.job(records.event("e1", destinations=("his", "cpc")))])
    [two] = store.ingest([records.job(records.event("e2", destinations=("cpc",)))])
    [again] = store.ingest([records.job(records.event("e2"), records.event("e1"))])
    assert [first_answer(a) for a in again.answers] == [
        first_answer(two.answers[0]),
        first_answer(one.answers[0]),
    ]
    assert [len(a.deliveries) for a in again.answers] == [1, 2]


def test_same_id_different_body_is_a_conflict_and_the_body_is_kept_rejected(
    store: Store, records: Records
) -> None:
    store.ingest([records.job(records.event("e1", version=1))])
    before = counts(store)
    job = records.job(records.event("e1", version=2), records.event("e9"))
    [outcome] = store.ingest([job])
    assert outcome.conflicts == ("e1",)
    assert outcome.answers == ()
    after = counts(store)
    assert after["inbound_messages"] == before["inbound_messages"] + 1
    assert (after["events"], after["deliveries"]) == (before["events"], before["deliveries"])
    message = inbound(store, job.inbound_id)
    assert message["status"] == "rejected"
    assert message["raw"] == job.raw
    assert message["error"] == [
        {
            "path": "event_id",
            "reason": "event id e1 was already accepted with a different body",
            "type": "conflict",
        }
    ]


def test_repeats_inside_one_group_commit(store: Store, records: Records) -> None:
    a = records.job(records.event("e1"))
    b = records.job(records.event("e1"))
    c = records.job(records.event("e1", version=2))
    first, repeat, conflict = store.ingest([a, b, c])
    assert [first_answer(x) for x in repeat.answers] == [first_answer(x) for x in first.answers]
    assert repeat.answers[0].replayed
    assert conflict.conflicts == ("e1",)
    assert counts(store)["deliveries"] == 1


def test_one_group_commit_answers_every_job_in_order(store: Store, records: Records) -> None:
    jobs = [records.job(records.event(f"e{n}", incident=f"INC-{n % 3}")) for n in range(30)]
    outcomes = store.ingest(jobs)
    assert [o.answers[0].event_id for o in outcomes] == [f"e{n}" for n in range(30)]
    assert [o.answers[0].inbound_id for o in outcomes] == [j.inbound_id for j in jobs]
    assert counts(store)["deliveries"] == 30


def test_reject_keeps_the_raw_body_and_the_reasons(store: Store, records: Records) -> None:
    raw = b'{"event_id": "e1", "type": "unit.teleported"}'
    errors = [{"path": "type", "reason": "unknown event type", "type": "union_tag_invalid"}]
    at = records.tick()
    store.reject(Rejected("REJ1", at, "http", "dispatch", "application/json", raw, errors))
    message = inbound(store, "REJ1")
    assert (message["status"], message["raw"], message["error"]) == ("rejected", raw, errors)
    assert message["event_count"] == 0
    assert counts(store)["events"] == 0


def test_incident_events_in_order_of_occurrence_up_to_a_time(
    store: Store, records: Records
) -> None:
    late = records.event("late", occurred_at=200.0)
    early = records.event("early", occurred_at=100.0)
    other = records.event("other", incident="INC-9", occurred_at=50.0)
    job = records.job(late, early, other)
    store.ingest([job])
    after = records.job(records.event("after", occurred_at=10.0))
    store.ingest([after])
    bodies = store.incident_events("INC-1", until=job.received_at)
    assert [b["event_id"] for b in bodies] == ["early", "late"]
    bodies = store.incident_events("INC-1", until=after.received_at)
    assert [b["event_id"] for b in bodies] == ["after", "early", "late"]
    assert orjson.loads(orjson.dumps(bodies[1])) == early.body


def test_a_claim_and_the_histories_share_one_decoded_body_per_event(
    store: Store, records: Records
) -> None:
    first = records.event("first", occurred_at=100.0)
    second = records.event("second", occurred_at=200.0)
    store.ingest([records.job(first, second)])
    [claimed] = store.claim("w1", limit=1, lease_seconds=30, destination="his")
    history = store.incident_events("INC-1", until=records.tick())
    again = store.incident_events("INC-1", until=records.tick())
    assert [b["event_id"] for b in history] == ["first", "second"]
    assert claimed.event is history[0]
    assert claimed.history_size == len(history) == 2
    assert all(a is b for a, b in zip(history, again, strict=True))
    assert history[1] == orjson.loads(orjson.dumps(second.body))


def test_several_histories_at_once_are_each_as_read_alone(store: Store, records: Records) -> None:
    store.ingest([records.job(records.event("a-late", occurred_at=200.0))])
    first = records.clock
    store.ingest([records.job(records.event("a-early", occurred_at=100.0))])
    store.ingest([records.job(records.event("b-1", incident="INC-B", occurred_at=50.0))])
    later = records.tick()
    wanted = [("INC-1", later), ("INC-B", later), ("INC-1", first), ("INC-NONE", later)]
    together = store.incident_histories(wanted)
    alone = [store.incident_events(incident, until=until) for incident, until in wanted]
    assert [[b["event_id"] for b in h] for h in together] == [
        ["a-early", "a-late"],
        ["b-1"],
        ["a-late"],
        [],
    ]
    assert all(
        x is y for h1, h2 in zip(together, alone, strict=True) for x, y in zip(h1, h2, strict=True)
    )
