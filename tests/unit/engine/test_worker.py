"""The worker: map once, send, classify, and move each delivery along its state machine."""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, ClassVar

import orjson
import pytest
from sqlalchemy import select

from hub.config.plan import Plan, plan_from_mapping
from hub.connectors.base import Connector, ConnectorSettings, Outbound, Outcome, SendResult
from hub.connectors.file import FileSettings
from hub.engine.routing import Router
from hub.engine.worker import Worker
from hub.ids import new_id
from hub.registry import register
from hub.store.records import IngestJob, NewEvent
from hub.store.store import Store
from hub.store.tables import attempts, deliveries
from mappings.base import MappingContext, MappingError, Payload


@register("mapping", "test-worker-refuses")
def _refuses(event: Mapping[str, Any], ctx: MappingContext) -> Payload:
    raise MappingError("no HIS department for this destination", path="data.department_code")


@register("mapping", "test-worker-crashes")
def _crashes(event: Mapping[str, Any], ctx: MappingContext) -> Payload:
    raise KeyError("data")


def _stateful(event: Mapping[str, Any], ctx: MappingContext) -> Payload:
    seen = [e["event_id"] for e in ctx.incident_events]
    return Payload(orjson.dumps({"seen": seen, "now": ctx.created_at.isoformat()}), "text/plain")


_stateful.needs_incident = True  # type: ignore[attr-defined]
register("mapping", "test-worker-stateful")(_stateful)


class ScriptedConnector(Connector):
    """Answers from a script (the last answer repeats) and keeps what it was sent."""

    settings_model: ClassVar[type[ConnectorSettings]] = FileSettings

    def __init__(self, *script: SendResult | Exception) -> None:
        super().__init__("partner", None)
        self.script = list(script) or [SendResult(Outcome.DELIVERED, status="ok")]
        self.sent: list[Outbound] = []

    async def send(self, message: Outbound) -> SendResult:
        self.sent.append(message)
        answer = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


DELIVERED = SendResult(Outcome.DELIVERED, status="HTTP 200", response="ok")
BUSY = SendResult(Outcome.TRANSIENT, status="HTTP 503", error="busy", error_class="http_5xx")
REFUSED = SendResult(Outcome.PERMANENT, status="HTTP 400", error="refused", error_class="http_4xx")


def make_plan(url: str, mapping: str = "canonical-json", **retry: float) -> Plan:
    policy = {"initial_delay": 0.001, "max_delay": 60, "max_attempts": 3, "jitter": 0, **retry}
    return plan_from_mapping(
        {
            "database_url": url,
            "retry_policies": {"default": policy},
            "destinations": {"partner": {"type": "file", "directory": "unused"}},
            "routes": [{"name": "r", "destination": "partner", "mapping": mapping}],
        },
        env={},
    )


def worker_plan(url: str, **worker: float) -> Plan:
    """One canonical-json route to the partner, with these ``worker`` settings."""
    return plan_from_mapping(
        {
            "database_url": url,
            "worker": worker,
            "destinations": {"partner": {"type": "file", "directory": "unused"}},
            "routes": [{"name": "r", "destination": "partner", "mapping": "canonical-json"}],
        },
        env={},
    )


def ingest(
    store: Store, plan: Plan, event_id: str, incident: str = "INC-1", occurred: str | None = None
) -> None:
    body: dict[str, Any] = {
        "event_id": event_id,
        "type": "incident.cancelled",
        "incident_id": incident,
        "source": "dispatch",
        "correlation_id": "CALL-1",
        "data": {"reason": "test"},
    }
    now = time.time()
    at = now
    if occurred is not None:
        body["occurred_at"] = occurred
        at = datetime.fromisoformat(occurred).timestamp()
    digest = hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()
    new = NewEvent(
        event_id, body["type"], incident, None, "CALL-1", "dispatch", at, body, digest,
        Router(plan).fan_out(body, now),
    )  # fmt: skip
    store.ingest([IngestJob(new_id(), now, "http", "dispatch", None, orjson.dumps(body), (new,))])


def history_reads(store: Store) -> list[str]:
    """The incident of each history the store is asked for, from now on."""
    reads: list[str] = []
    incident_events = store.incident_events

    def counted(incident_id: str, *, until: float) -> Any:
        reads.append(incident_id)
        return incident_events(incident_id, until=until)

    store.incident_events = counted  # type: ignore[method-assign]
    return reads


def rows(store: Store) -> list[dict[str, Any]]:
    with store.engine.connect() as conn:
        return [
            dict(r._mapping) for r in conn.execute(select(deliveries).order_by(deliveries.c.id))
        ]


def attempt_log(store: Store) -> list[dict[str, Any]]:
    with store.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(select(attempts).order_by(attempts.c.id))]


def metric(worker: Worker, result: str) -> float | None:
    value: float | None = worker.metrics.registry.get_sample_value(
        "hub_delivery_attempts_total", {"destination": "partner", "result": result}
    )
    return value


def rounds(worker: Worker, limit: int = 20) -> int:
    """Run rounds on one loop until one finds nothing due; the number handled."""

    async def drain() -> int:
        handled = 0
        for _ in range(limit):
            await asyncio.sleep(0.002)  # let a 1 ms retry delay pass
            n = await worker.run_once()
            if n == 0:
                return handled
            handled += n
        raise AssertionError("the outbox never drained")

    return asyncio.run(drain())


def test_delivers_maps_once_and_records(store: Store) -> None:
    plan = make_plan(store.url)
    ingest(store, plan, "e1")
    partner = ScriptedConnector(DELIVERED)
    worker = Worker(store, plan, connectors={"partner": partner}, name="w-test")
    assert asyncio.run(worker.run_once()) == 1
    [sent] = partner.sent
    [row] = rows(store)
    assert (sent.message_id, sent.delivery_id, sent.attempt) == (row["message_id"], row["id"], 1)
    assert (sent.incident_id, sent.correlation_id, sent.event_type) == (
        "INC-1",
        "CALL-1",
        "incident.cancelled",
    )
    assert sent.content_type == "application/json"
    document = orjson.loads(sent.payload)
    assert document["message_id"] == row["message_id"]
    assert document["event"]["event_id"] == "e1"
    assert (row["status"], row["attempts"], row["payload"]) == ("delivered", 1, sent.payload)
    [attempt] = attempt_log(store)
    assert (attempt["outcome"], attempt["status"], attempt["worker"]) == (
        "delivered",
        "HTTP 200",
        "w-test",
    )
    assert metric(worker, "delivered") == 1
    registry = worker.metrics.registry
    labels = {"destination": "partner"}
    assert registry.get_sample_value("hub_delivery_latency_seconds_count", labels) == 1


def test_retries_keep_the_message_id_and_the_mapped_bytes(store: Store) -> None:
    plan = make_plan(store.url, max_attempts=5)
    ingest(store, plan, "e1")
    partner = ScriptedConnector(BUSY, BUSY, DELIVERED)
    worker = Worker(store, plan, connectors={"partner": partner})
    assert rounds(worker) == 3
    assert [m.attempt for m in partner.sent] == [1, 2, 3]
    assert len({m.message_id for m in partner.sent}) == 1
    assert len({m.payload for m in partner.sent}) == 1
    [row] = rows(store)
    assert (row["status"], row["attempts"]) == ("delivered", 3)
    assert [a["outcome"] for a in attempt_log(store)] == ["transient", "transient", "delivered"]
    assert (metric(worker, "failed"), metric(worker, "delivered")) == (2, 1)


def test_a_spent_schedule_parks_the_delivery_as_dead(store: Store) -> None:
    plan = make_plan(store.url, max_attempts=3)
    ingest(store, plan, "e1")
    partner = ScriptedConnector(BUSY)
    worker = Worker(store, plan, connectors={"partner": partner})
    assert rounds(worker) == 3
    [row] = rows(store)
    assert (row["status"], row["attempts"]) == ("dead", 3)
    assert row["last_error"] == "gave up after 3 attempts: busy"
    assert metric(worker, "dead") == 1


def test_a_permanent_failure_is_dead_at_once(store: Store) -> None:
    plan = make_plan(store.url)
    ingest(store, plan, "e1")
    worker = Worker(store, plan, connectors={"partner": ScriptedConnector(REFUSED)})
    assert rounds(worker) == 1
    [row] = rows(store)
    assert (row["status"], row["attempts"], row["last_error"]) == ("dead", 1, "refused")
    assert attempt_log(store)[0]["error_class"] == "http_4xx"


def test_the_next_attempt_follows_the_policy_and_retry_after(store: Store) -> None:
    plan = make_plan(store.url, initial_delay=20, max_delay=60)
    ingest(store, plan, "e1")
    ingest(store, plan, "e2", incident="INC-2")
    asked = SendResult(Outcome.TRANSIENT, status="HTTP 429", error_class="http_4xx", retry_after=40)
    worker = Worker(store, plan, connectors={"partner": ScriptedConnector(BUSY, asked)})
    assert rounds(worker) == 2, "nothing is due again before its time"
    first, second = rows(store)
    assert first["status"] == second["status"] == "pending"
    assert first["next_attempt_at"] - first["updated_at"] == pytest.approx(20, abs=0.01)
    assert second["next_attempt_at"] - second["updated_at"] == pytest.approx(40, abs=0.01)


def test_a_connector_that_raises_counts_as_transient(store: Store) -> None:
    plan = make_plan(store.url)
    ingest(store, plan, "e1")
    worker = Worker(store, plan, connectors={"partner": ScriptedConnector(RuntimeError("bug"))})
    assert asyncio.run(worker.run_once()) == 1
    [row] = rows(store)
    assert row["status"] == "pending"
    [attempt] = attempt_log(store)
    assert (attempt["outcome"], attempt["error_class"]) == ("transient", "connector")
    assert "RuntimeError('bug')" in attempt["error"]


@pytest.mark.parametrize(
    ("mapping", "error"),
    [
        ("test-worker-refuses", "data.department_code: no HIS department for this destination"),
        ("test-worker-crashes", "mapping crashed: KeyError('data')"),
    ],
)
def test_a_mapping_failure_is_dead_and_nothing_is_sent(
    store: Store, mapping: str, error: str
) -> None:
    plan = make_plan(store.url, mapping=mapping)
    ingest(store, plan, "e1")
    partner = ScriptedConnector(DELIVERED)
    worker = Worker(store, plan, connectors={"partner": partner})
    assert asyncio.run(worker.run_once()) == 1
    assert partner.sent == []
    [row] = rows(store)
    assert (row["status"], row["last_error"], row["payload"]) == ("dead", error, None)
    assert attempt_log(store)[0]["error_class"] == "mapping"


def test_a_stateful_mapping_sees_the_incident_so_far(store: Store) -> None:
    plan = make_plan(store.url, mapping="test-worker-stateful")
    ingest(store, plan, "e1")
    ingest(store, plan, "e2")
    ingest(store, plan, "other", incident="INC-2")
    partner = ScriptedConnector(DELIVERED)
    worker = Worker(store, plan, connectors={"partner": partner})
    assert rounds(worker) == 3
    seen = {m.incident_id + "/" + str(m.delivery_id): orjson.loads(m.payload) for m in partner.sent}
    assert [v["seen"] for k, v in sorted(seen.items())] == [["e1"], ["e1", "e2"], ["other"]]
    assert {m.content_type for m in partner.sent} == {"text/plain"}


@pytest.mark.parametrize("inline_db", [False, True])
def test_store_calls_run_on_the_loop_only_when_asked(store: Store, inline_db: bool) -> None:
    plan = make_plan(store.url, mapping="test-worker-stateful")
    ingest(store, plan, "e1")
    threads: list[int] = []
    for name in ("claim", "incident_events", "finish"):
        method = getattr(store, name)

        def watched(*args: Any, _method: Any = method, **kwargs: Any) -> Any:
            threads.append(threading.get_ident())
            return _method(*args, **kwargs)

        setattr(store, name, watched)
    partner = ScriptedConnector(DELIVERED)
    worker = Worker(store, plan, connectors={"partner": partner}, inline_db=inline_db)
    loop_thread: list[int] = []

    async def one_round() -> int:
        loop_thread.append(threading.get_ident())
        return await worker.run_once()

    assert asyncio.run(one_round()) == 1
    assert len(threads) == 3
    assert [rows(store)[0]["status"]] == ["delivered"]
    on_loop = [t == loop_thread[0] for t in threads]
    assert on_loop == [inline_db] * 3


def test_deliveries_of_one_history_read_it_once(store: Store) -> None:
    """Two routes for one event: the second delivery's history is the first one's (the
    claim counted the same events), so the store is asked once; a new event asks again."""
    plan = plan_from_mapping(
        {
            "database_url": store.url,
            "destinations": {"partner": {"type": "file", "directory": "unused"}},
            "routes": [
                {"name": r, "destination": "partner", "mapping": "test-worker-stateful"}
                for r in ("his", "emr")
            ],
        },
        env={},
    )
    reads = history_reads(store)
    partner = ScriptedConnector(DELIVERED)
    worker = Worker(store, plan, connectors={"partner": partner})
    ingest(store, plan, "e1")
    assert rounds(worker) == 2
    ingest(store, plan, "e2")
    assert rounds(worker) == 2
    assert reads == ["INC-1", "INC-1"]
    seen = [orjson.loads(m.payload)["seen"] for m in partner.sent]
    assert seen == [["e1"], ["e1"], ["e1", "e2"], ["e1", "e2"]]


def test_a_history_that_lacks_only_the_claimed_event_is_extended_not_read(
    store: Store,
) -> None:
    """A new event that occurred last is appended to the kept history (the claim counted
    one event more, and a history read earlier cannot hold it); one that occurred before
    the kept last event belongs inside, so the history is read again, in order."""
    plan = make_plan(store.url, mapping="test-worker-stateful")
    reads = history_reads(store)
    partner = ScriptedConnector(DELIVERED)
    worker = Worker(store, plan, connectors={"partner": partner})
    ingest(store, plan, "e1", occurred="2026-11-25T08:00:00+08:00")
    assert rounds(worker) == 1
    ingest(store, plan, "e2", occurred="2026-11-25T00:01:00+00:00")  # 08:01 in Beijing
    assert rounds(worker) == 1
    assert reads == ["INC-1"]
    ingest(store, plan, "late", occurred="2026-11-25T08:00:30+08:00")
    assert rounds(worker) == 1
    assert reads == ["INC-1", "INC-1"]
    ingest(store, plan, "no-time")  # without occurred_at: nothing to order by, read
    assert rounds(worker) == 1
    assert reads == ["INC-1", "INC-1", "INC-1"]
    seen = [orjson.loads(m.payload)["seen"] for m in partner.sent]
    assert seen == [["e1"], ["e1", "e2"], ["e1", "late", "e2"], seen[3]]
    assert sorted(seen[3]) == ["e1", "e2", "late", "no-time"]


def test_kept_histories_are_bounded_by_the_events_they_hold(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("hub.engine.worker._HISTORY_EVENTS", 2)
    plan = make_plan(store.url, mapping="test-worker-stateful")
    worker = Worker(store, plan, connectors={"partner": ScriptedConnector(DELIVERED)})
    ingest(store, plan, "a1", incident="INC-A")
    ingest(store, plan, "a2", incident="INC-A")
    assert rounds(worker) == 2
    ingest(store, plan, "b1", incident="INC-B")
    assert rounds(worker) == 1
    # INC-A's two events and INC-B's one exceed the bound: the oldest incident goes.
    assert list(worker._histories) == ["INC-B"]
    assert worker._history_events == 1


def test_kept_histories_are_bounded_by_incidents_and_taking_turns_reads_none_again(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Incidents taking turns, as monitors do, within the bound: each history is read
    once. Bounded by events alone, such a stream outgrew the bound and then read every
    history again on every delivery."""
    monkeypatch.setattr("hub.engine.worker._HISTORY_INCIDENTS", 3)
    plan = make_plan(store.url, mapping="test-worker-stateful")
    worker = Worker(store, plan, connectors={"partner": ScriptedConnector(DELIVERED)})
    reads = history_reads(store)
    for turn in range(4):
        for incident in ("INC-A", "INC-B", "INC-C"):
            at = f"2026-11-25T08:0{turn}:00+08:00"  # each a sample later than the last
            ingest(store, plan, f"{incident}-{turn}", incident=incident, occurred=at)
            assert rounds(worker) == 1
    assert sorted(reads) == ["INC-A", "INC-B", "INC-C"]
    assert worker._history_events == 12
    ingest(store, plan, "d0", incident="INC-D", occurred="2026-11-25T08:05:00+08:00")
    assert rounds(worker) == 1
    assert list(worker._histories) == ["INC-B", "INC-C", "INC-D"]  # INC-A went


def test_a_claims_histories_are_read_in_one_store_call(store: Store) -> None:
    plan = make_plan(store.url, mapping="test-worker-stateful")
    for n in range(3):
        ingest(store, plan, f"e{n}", incident=f"INC-{n}")
    calls: list[str] = []
    for name in ("incident_events", "incident_histories"):
        method = getattr(store, name)

        def counted(*args: Any, _name: str = name, _method: Any = method, **kwargs: Any) -> Any:
            calls.append(_name)
            return _method(*args, **kwargs)

        setattr(store, name, counted)
    partner = ScriptedConnector(DELIVERED)
    worker = Worker(store, plan, connectors={"partner": partner})
    assert asyncio.run(worker.run_once()) == 3
    assert calls == ["incident_histories"]
    seen = sorted(orjson.loads(m.payload)["seen"] for m in partner.sent)
    assert seen == [["e0"], ["e1"], ["e2"]]


def test_a_failed_claim_is_logged_and_tried_again_not_the_end_of_delivery(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """The database may fail for a while (a PostgreSQL restart, a full disk): the
    worker's loop must outlive it, or deliveries stop until the hub is restarted."""
    plan = worker_plan(store.url, poll_interval=0.01)
    claim = store.claim
    failures = [RuntimeError("database unavailable")] * 2

    def flaky(*args: Any, **kwargs: Any) -> Any:
        if failures:
            raise failures.pop()
        return claim(*args, **kwargs)

    store.claim = flaky  # type: ignore[method-assign]
    ingest(store, plan, "e1")
    partner = ScriptedConnector(DELIVERED)
    worker = Worker(store, plan, connectors={"partner": partner})

    async def run_until_delivered() -> None:
        async with running(worker):  # a loop that died would never send
            await until(lambda: bool(partner.sent))

    with caplog.at_level("ERROR", logger="hub.worker"):
        asyncio.run(run_until_delivered())
    assert [m.message_id for m in partner.sent] == [rows(store)[0]["message_id"]]
    assert rows(store)[0]["status"] == "delivered"
    assert failures == []
    assert sum("could not claim" in r.message for r in caplog.records) == 2


class GatedConnector(ScriptedConnector):
    """Delivers each message when the test opens its gate (sends finish when told)."""

    def __init__(self) -> None:
        super().__init__(DELIVERED)
        self.gates: dict[str, asyncio.Event] = {}

    async def send(self, message: Outbound) -> SendResult:
        gate = self.gates.setdefault(message.message_id, asyncio.Event())
        await gate.wait()
        return await super().send(message)


@asynccontextmanager
async def running(worker: Worker) -> AsyncIterator[None]:
    """The worker's loop, running for the block, then stopped (it drains first)."""
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        yield
    finally:
        stop.set()
        await task


def seconds_until(worker: Worker, condition: Callable[[], bool]) -> float:
    """Run the worker until ``condition`` holds; how long that took."""

    async def scenario() -> float:
        async with running(worker):
            started = time.monotonic()
            await until(condition)
            took = time.monotonic() - started
        return took

    return asyncio.run(scenario())


def finish_calls(store: Store) -> list[int]:
    """The number of results in each store.finish call, from now on."""
    calls: list[int] = []
    finish = store.finish

    def counted(results: Any, **kwargs: Any) -> bool:
        calls.append(len(results))
        return finish(results, **kwargs)

    store.finish = counted  # type: ignore[method-assign]
    return calls


async def until(condition: Callable[[], bool], within: float = 5.0) -> None:
    for _ in range(int(within / 0.005)):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"not so within {within} s")


def test_sends_finishing_close_together_share_one_commit(store: Store) -> None:
    plan = worker_plan(store.url, poll_interval=0.01, record_linger=0.2)
    for n in range(3):
        ingest(store, plan, f"e{n}", incident=f"INC-{n}")
    partner = GatedConnector()
    worker = Worker(store, plan, connectors={"partner": partner})
    calls = finish_calls(store)

    async def scenario() -> None:
        async with running(worker):
            await until(lambda: len(partner.gates) == 3)
            for gate in partner.gates.values():  # one after another, well within the linger
                gate.set()
                await asyncio.sleep(0.01)
            await until(lambda: bool(calls))

    asyncio.run(scenario())
    assert calls == [3]
    assert {r["status"] for r in rows(store)} == {"delivered"}


def test_the_last_send_running_is_recorded_at_once(store: Store) -> None:
    """A linger far longer than the test: a result with no other send running must not
    wait for it (one connection sending in turn would otherwise crawl)."""
    plan = worker_plan(store.url, poll_interval=0.01, record_linger=1.0)
    ingest(store, plan, "e1")
    partner = ScriptedConnector(DELIVERED)
    worker = Worker(store, plan, connectors={"partner": partner})
    calls = finish_calls(store)
    assert seconds_until(worker, lambda: bool(calls)) < 0.5
    assert calls == [1]


def test_a_slow_send_does_not_hold_up_the_recording_of_others(store: Store) -> None:
    plan = worker_plan(store.url, poll_interval=0.01, record_linger=0.05)
    ingest(store, plan, "fast", incident="INC-A")
    ingest(store, plan, "slow", incident="INC-B")
    partner = GatedConnector()
    worker = Worker(store, plan, connectors={"partner": partner})
    calls = finish_calls(store)
    fast, slow = (r["message_id"] for r in rows(store))

    async def scenario() -> None:
        async with running(worker):
            await until(lambda: len(partner.gates) == 2)
            partner.gates[fast].set()
            await until(lambda: bool(calls))  # the fast one, once the linger is over
            assert calls == [1]
            assert [r["status"] for r in rows(store)] == ["delivered", "in_flight"]
            partner.gates[slow].set()

    asyncio.run(scenario())
    assert calls == [1, 1]
    assert {r["status"] for r in rows(store)} == {"delivered"}


def counted_claims(store: Store) -> list[int]:
    """The number of deliveries each store.claim call returned, from now on."""
    claims: list[int] = []
    claim = store.claim

    def counted(*args: Any, **kwargs: Any) -> Any:
        claimed = claim(*args, **kwargs)
        claims.append(len(claimed))
        return claimed

    store.claim = counted  # type: ignore[method-assign]
    return claims


def test_a_claim_that_took_all_that_was_due_waits_to_be_woken(store: Store) -> None:
    """No second claim straight after one that found fewer than it asked for: it would
    find nothing, and on SQLite take the write lock received messages wait for."""
    plan = worker_plan(store.url, poll_interval=30)
    ingest(store, plan, "e1")
    partner = ScriptedConnector(DELIVERED)
    worker = Worker(store, plan, connectors={"partner": partner})
    claims = counted_claims(store)

    async def scenario() -> None:
        async with running(worker):
            await until(lambda: len(partner.sent) == 1 and rows(store)[0]["status"] == "delivered")
            await asyncio.sleep(0.1)
            # Nothing waited behind the recorded delivery in its queue, so no claim follows
            # its result either; before, two did, finding nothing: [1, 0, 0].
            assert claims == [1]
            ingest(store, plan, "e2")
            worker.wake()  # as the hub does after a commit that created deliveries
            await until(lambda: len(partner.sent) == 2)

    asyncio.run(scenario())
    assert claims[:2] == [1, 1]


def test_the_next_delivery_of_a_queue_is_claimed_once_the_one_before_is_recorded(
    store: Store,
) -> None:
    """It was held back by its queue's head, and no commit will wake the worker for it:
    the result tells (the poll is far off)."""
    plan = worker_plan(store.url, poll_interval=30)
    ingest(store, plan, "e1")
    ingest(store, plan, "e2")  # the same incident: the same queue, behind e1
    partner = ScriptedConnector(DELIVERED)
    worker = Worker(store, plan, connectors={"partner": partner})

    async def scenario() -> None:
        async with running(worker):
            await until(lambda: len(partner.sent) == 2)

    asyncio.run(scenario())
    assert [m.message_id for m in partner.sent] == [r["message_id"] for r in rows(store)]


def test_deliveries_coming_close_together_are_claimed_together(store: Store) -> None:
    plan = worker_plan(store.url, poll_interval=30, claim_linger=0.3)
    partner = ScriptedConnector(DELIVERED)
    worker = Worker(store, plan, connectors={"partner": partner})
    claims = counted_claims(store)

    async def scenario() -> None:
        async with running(worker):
            await until(lambda: claims == [0])  # caught up: nothing was due
            for n in range(4):  # four commits close together, each waking the worker
                ingest(store, plan, f"e{n}", incident=f"INC-{n}")
                worker.wake()
                await asyncio.sleep(0.02)
            await until(lambda: len(partner.sent) == 4)

    asyncio.run(scenario())
    # The first after a quiet spell at once; those close behind it waited for each other.
    assert claims == [0, 1, 3]


def test_deliveries_coming_far_apart_are_claimed_at_once(store: Store) -> None:
    """Waiting when nothing else is coming would only add latency."""
    plan = worker_plan(store.url, poll_interval=30, claim_linger=0.3)
    partner = ScriptedConnector(DELIVERED)
    worker = Worker(store, plan, connectors={"partner": partner})
    waits: list[float] = []

    async def scenario() -> None:
        async with running(worker):
            for n in range(3):
                await asyncio.sleep(0.35)  # farther apart than the linger
                ingest(store, plan, f"e{n}", incident=f"INC-{n}")
                woken = time.monotonic()
                worker.wake()
                await until(lambda n=n: len(partner.sent) == n + 1)
                waits.append(time.monotonic() - woken)

    asyncio.run(scenario())
    assert max(waits) < 0.2, waits


def test_a_delivery_a_result_unblocks_is_claimed_without_the_wait(store: Store) -> None:
    """The next delivery of a queue, once the one before is recorded, does not wait for
    the claim linger: a queue drains at the partner's pace, not one per linger."""
    plan = worker_plan(store.url, poll_interval=30, claim_linger=1.0)
    for n in range(3):
        ingest(store, plan, f"e{n}")  # one incident: one queue
    partner = ScriptedConnector(DELIVERED)
    worker = Worker(store, plan, connectors={"partner": partner})
    assert seconds_until(worker, lambda: len(partner.sent) == 3) < 0.5


def test_new_deliveries_waiting_for_a_slot_go_out_as_results_free_one(store: Store) -> None:
    """One slot, three queues, new commits waking the worker meanwhile: the claim linger
    must not keep a freed slot idle."""
    plan = plan_from_mapping(
        {
            "database_url": store.url,
            "worker": {"poll_interval": 30, "claim_linger": 1.0, "record_linger": 0},
            "destinations": {
                "partner": {"type": "file", "directory": "unused", "max_in_flight": 1}
            },
            "routes": [{"name": "r", "destination": "partner", "mapping": "canonical-json"}],
        },
        env={},
    )
    partner = GatedConnector()
    worker = Worker(store, plan, connectors={"partner": partner})

    async def scenario() -> float:
        async with running(worker):
            ingest(store, plan, "e0", incident="INC-0")
            worker.wake()
            await until(lambda: len(partner.gates) == 1)
            for n in (1, 2):  # committed while the only slot is taken
                ingest(store, plan, f"e{n}", incident=f"INC-{n}")
                worker.wake()
            started = time.monotonic()
            for opened in range(3):  # each send is let through once the worker made it
                await until(lambda opened=opened: len(partner.gates) > opened)
                next(g for g in partner.gates.values() if not g.is_set()).set()
            await until(lambda: len(partner.sent) == 3)
            took = time.monotonic() - started
        return took

    assert asyncio.run(scenario()) < 0.5


def test_a_send_outlasting_the_lease_keeps_it_and_goes_out_once(store: Store) -> None:
    """A partner that is slow to answer (an ACK timeout, deliveries queued behind it for
    a connection) may keep a send running longer than its lease: the worker renews it,
    or the next claim, its own or another worker's, would take the delivery again and
    send it twice."""
    plan = worker_plan(store.url, poll_interval=0.01, lease_seconds=0.6)
    ingest(store, plan, "e1")
    partner = GatedConnector()
    calls: list[str] = []
    gated_send = partner.send

    async def counted(message: Outbound) -> SendResult:
        calls.append(message.message_id)
        return await gated_send(message)

    partner.send = counted  # type: ignore[method-assign]
    worker = Worker(store, plan, connectors={"partner": partner})
    other = Worker(store, plan, connectors={"partner": ScriptedConnector()}, name="other")

    async def scenario() -> None:
        async with running(worker):
            await until(lambda: len(calls) == 1)
            await asyncio.sleep(2.0)  # three leases long
            [row] = rows(store)
            assert row["status"] == "in_flight"
            assert row["lease_until"] > time.time()
            assert await other.run_once() == 0  # nothing to take over
            partner.gates[row["message_id"]].set()
            await until(lambda: rows(store)[0]["status"] == "delivered")

    asyncio.run(scenario())
    assert len(calls) == 1
    assert len(attempt_log(store)) == 1
