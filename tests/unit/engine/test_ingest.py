"""Where an ingest commit runs: the group-commit writer's thread (PostgreSQL's), the
event loop that gathered the group (SQLite's), or the caller for a lone sender."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from hub.config.plan import plan_from_mapping
from hub.engine.ingest import GroupCommitWriter, Ingestor
from hub.engine.metrics import HubMetrics
from hub.engine.routing import Router
from hub.store.store import Store
from hub.testing.examples import example_events


class Watched:
    """Records the thread of every ingest; can hold the writer thread's commits."""

    def __init__(self, store: Store) -> None:
        self.ingest = store.ingest
        self.threads: list[str] = []
        self.hold = threading.Event()
        self.hold.set()
        self.writer_waiting = threading.Event()
        store.ingest = self  # type: ignore[method-assign]

    def __call__(self, jobs: Any) -> Any:
        name = threading.current_thread().name
        self.threads.append(name)
        if name == "hub-ingest-writer":
            self.writer_waiting.set()
            self.hold.wait(10)
        return self.ingest(jobs)


def ingestor(
    store: Store, *, types: tuple[str, ...] = ("*",), on_loop: bool = False
) -> tuple[Ingestor, GroupCommitWriter, list[int]]:
    """One route (events of ``types`` to a folder): ``woken`` counts worker wake-ups.
    The writer commits on its thread unless ``on_loop``, whatever the database."""
    plan = plan_from_mapping(
        {
            "database_url": store.url,
            "destinations": {"partner": {"type": "file", "directory": "unused"}},
            "routes": [
                {
                    "name": "r",
                    "when": {"types": list(types)},
                    "destination": "partner",
                    "mapping": "canonical-json",
                }
            ],
        },
        env={},
    )
    writer = GroupCommitWriter(store, on_loop=on_loop)
    woken: list[int] = []
    writer.committed.append(lambda: woken.append(1))
    return Ingestor(store, Router(plan), writer, HubMetrics()), writer, woken


async def submit(ingestor: Ingestor, event: dict[str, Any], *, alone: bool) -> Any:
    return await ingestor.submit_foreign(
        b"raw", [event], channel="mllp", content_type="application/hl7-v2", alone=alone
    )


async def burst(ingestor: Ingestor, events: list[dict[str, Any]]) -> list[Any]:
    """Every event from a sender of its own, all in the same turn of the loop; failures
    come back as exceptions."""
    senders = (submit(ingestor, e, alone=False) for e in events)
    return list(await asyncio.gather(*senders, return_exceptions=True))


def test_a_lone_sender_commits_in_the_callers_thread_while_the_writer_is_idle(
    store: Store,
) -> None:
    watched = Watched(store)
    ingest, writer, woken = ingestor(store)
    writer.start()
    try:
        events = example_events()
        lone = asyncio.run(submit(ingest, events[0], alone=True))
        grouped = asyncio.run(submit(ingest, events[1], alone=False))
    finally:
        writer.stop()
    assert lone.outcome is not None and grouped.outcome is not None
    assert watched.threads == [threading.current_thread().name, "hub-ingest-writer"]
    assert woken == [1, 1]  # workers are woken after either commit


def test_a_commit_that_made_no_delivery_wakes_no_worker(store: Store) -> None:
    Watched(store)
    ingest, writer, woken = ingestor(store, types=("vitals.recorded",))
    writer.start()
    try:
        events = example_events()
        assert events[0]["type"] != "vitals.recorded"
        lone = asyncio.run(submit(ingest, events[0], alone=True))
        grouped = asyncio.run(submit(ingest, events[1], alone=False))
        vitals = next(e for e in events if e["type"] == "vitals.recorded")
        routed = asyncio.run(submit(ingest, vitals, alone=False))
    finally:
        writer.stop()
    assert lone.outcome is not None and grouped.outcome is not None
    assert routed.outcome is not None
    assert woken == [1]  # the vitals event's commit only


def test_a_lone_sender_joins_the_writer_while_it_is_committing(store: Store) -> None:
    watched = Watched(store)
    ingest, writer, _ = ingestor(store)
    writer.start()
    events = example_events()

    async def both() -> list[Any]:
        watched.hold.clear()
        first = asyncio.ensure_future(submit(ingest, events[0], alone=False))
        await asyncio.to_thread(watched.writer_waiting.wait, 10)
        assert not writer.idle
        second = asyncio.ensure_future(submit(ingest, events[1], alone=True))
        await asyncio.sleep(0.05)
        assert not second.done()  # queued behind the commit in progress, not run here
        watched.hold.set()
        return list(await asyncio.gather(first, second))

    try:
        results = asyncio.run(both())
    finally:
        watched.hold.set()
        writer.stop()
    assert all(r.outcome is not None and not r.errors for r in results)
    assert set(watched.threads) == {"hub-ingest-writer"}
    assert writer.idle


def test_one_group_commit_answers_each_sender_with_its_own_outcome_or_the_failure(
    store: Store,
) -> None:
    watched = Watched(store)
    ingest, writer, _ = ingestor(store)
    writer.start()
    events = example_events()[:4]

    async def group() -> list[Any]:
        watched.hold.clear()
        first = asyncio.ensure_future(submit(ingest, events[0], alone=False))
        await asyncio.to_thread(watched.writer_waiting.wait, 10)
        rest = [asyncio.ensure_future(submit(ingest, e, alone=False)) for e in events[1:]]
        await asyncio.sleep(0.05)  # all three queued behind the held commit: one group
        watched.hold.set()
        return list(await asyncio.gather(first, *rest, return_exceptions=True))

    def broken(jobs: Any) -> Any:
        raise RuntimeError("disk full")

    try:
        results = asyncio.run(group())
        assert len(watched.threads) == 2  # the first commit, then the other three together
        store.ingest = broken  # type: ignore[method-assign]
        failures = asyncio.run(group())
    finally:
        watched.hold.set()
        writer.stop()
    answered = [r.outcome.answers[0].event_id for r in results]
    assert answered == [e["event_id"] for e in events]
    assert [str(f) for f in failures] == ["disk full"] * 4


def test_on_the_loop_the_senders_of_one_burst_share_one_commit_there(store: Store) -> None:
    watched = Watched(store)
    ingest, writer, woken = ingestor(store, on_loop=True)
    writer.start()  # starts no thread
    events = example_events()[:4]
    try:
        results = asyncio.run(burst(ingest, events))
        later = asyncio.run(submit(ingest, example_events()[4], alone=False))
    finally:
        writer.stop()
    answered = [r.outcome.answers[0].event_id for r in results]
    assert answered == [e["event_id"] for e in events]
    assert later.outcome is not None
    # one commit for the burst, one for the later body, both on this (the loop's) thread
    assert watched.threads == [threading.current_thread().name] * 2
    assert woken == [1, 1]
    assert writer.idle


def test_on_the_loop_a_failed_commit_answers_every_sender_with_the_failure(
    store: Store,
) -> None:
    ingest, writer, woken = ingestor(store, on_loop=True)
    events = example_events()[:3]

    def broken(jobs: Any) -> Any:
        raise RuntimeError("disk full")

    store.ingest = broken  # type: ignore[method-assign]
    failures = asyncio.run(burst(ingest, events))
    assert [str(f) for f in failures] == ["disk full"] * 3
    assert woken == []  # nothing was committed
    assert writer.idle


def test_on_the_loop_a_group_commits_at_once_when_full(store: Store) -> None:
    watched = Watched(store)
    ingest, writer, _ = ingestor(store, on_loop=True)
    writer._max_batch = 2
    results = asyncio.run(burst(ingest, example_events()[:3]))
    assert all(r.outcome is not None and not r.errors for r in results)
    assert len(watched.threads) == 2  # two bodies, then the third


def test_the_writer_commits_on_the_loop_by_default_on_sqlite_only(store: Store) -> None:
    assert GroupCommitWriter(store).on_loop is store.sqlite
