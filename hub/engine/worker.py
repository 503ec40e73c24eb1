"""The delivery worker: claim due queue heads, map, send, record, repeat.

Many workers may share one database; each claims under a lease, so a crashed worker's
deliveries return to the queue when its lease ends (or at once, by the start-up sweep).
A running worker renews the leases of the deliveries it still holds, however long a
partner takes to answer.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, NamedTuple, TypeVar

from hub.config.plan import Destination, Plan
from hub.connectors.base import Connector, Outbound, Outcome, SendResult
from hub.engine.metrics import DeliveryObserver, HubMetrics
from hub.ids import new_id
from hub.registry import RegistryError, lookup
from hub.store.records import Claimed, DeliveryStatus, Finished
from hub.store.store import Store
from mappings.base import MappingContext, MappingError, NothingToSend, Payload
from mappings.incident import MEMO_INCIDENTS

__all__ = ["Worker", "build_connectors", "worker_id"]

log = logging.getLogger("hub.worker")
# The incident histories a worker keeps: as many incidents as the mappings' memos
# remember (which hold the same dicts, so the worker's copy costs only the tuples), and
# a bound on their events against a few giant incidents. Kept by events alone (50,000),
# 200 monitors at 250 samples each outgrew it: every delivery then read its whole
# history again, and the worker fell from ~2,500 to ~220 messages/s (least recently used
# is the worst choice when incidents take turns).
_HISTORY_INCIDENTS = MEMO_INCIDENTS
_HISTORY_EVENTS = 500_000
_MAX_PAUSE = 10.0  # seconds between claims while the database keeps failing
_RECORD_BATCH = 64  # results recorded in one commit at most
_QUEUES_ASKED = 4  # recording more results than this wakes a claim without asking
T = TypeVar("T")


def worker_id() -> str:
    """host:pid:random, so a sweep can tell this host's dead workers from live ones."""
    return f"{socket.gethostname()[:32]}:{os.getpid()}:{new_id()[-6:]}"


def build_connectors(plan: Plan) -> dict[str, Connector]:
    connectors = {}
    for name, dest in plan.destinations.items():
        cls = lookup("connector", dest.type)
        connectors[name] = cls(name, dest.settings)
    return connectors


class Worker:
    """Drains the outbox until ``stop`` is set, then finishes what it holds.

    Each destination claims only as many deliveries as it has free send slots, and each
    send is recorded when it ends, or within ``worker.record_linger`` together with
    sends ending close to it (see _record), so a slow partner never holds up another. A
    delivery stays ``in_flight`` until its result is committed, which keeps the next
    delivery of its key unclaimable until then.

    Call :meth:`wake` (from any thread) after a commit that created deliveries, so they
    go out without waiting for the next poll.

    ``inline_db`` runs store calls on the event loop instead of a thread: for a worker in
    a process of its own, where nothing else waits on the loop. A store thread there
    holds its transaction (on SQLite the one write lock) while it waits for the GIL,
    which the loop holds while it maps (up to the 5 ms switch interval), so other
    writers wait too; inline, the transaction lasts only as long as the database works.
    Measured with one worker process on 2 cores: MLLP end to end +17–33% on SQLite, ~+45%
    on PostgreSQL.
    """

    def __init__(
        self,
        store: Store,
        plan: Plan,
        *,
        metrics: DeliveryObserver | None = None,
        connectors: Mapping[str, Connector] | None = None,
        name: str | None = None,
        inline_db: bool = False,
    ) -> None:
        self.store = store
        self.plan = plan
        self.metrics: DeliveryObserver = metrics or HubMetrics()
        self.connectors = dict(connectors) if connectors is not None else build_connectors(plan)
        self.name = name or worker_id()
        self._spec = plan.spec.worker
        self._active = [n for n, d in plan.destinations.items() if d.enabled]
        self._in_flight = dict.fromkeys(plan.destinations, 0)
        self._tasks: set[asyncio.Task[None]] = set()
        self._results: list[tuple[Claimed, Finished]] = []
        self._more: asyncio.Future[None] | None = None  # set when a result comes in
        self._saturated = False  # the last claim got all it asked for somewhere
        self._db = (
            None
            if inline_db
            else ThreadPoolExecutor(max_workers=1, thread_name_prefix="hub-worker-db")
        )
        self._wake: asyncio.Event | None = None  # new deliveries were committed
        self._freed: asyncio.Event | None = None  # a result may have unblocked some
        self._recorded: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._histories: OrderedDict[str, _History] = OrderedDict()
        self._history_events = 0  # held in _histories
        # Deliveries claimed and not yet recorded: id -> loop time their lease was set.
        self._held: dict[int, float] = {}

    def wake(self) -> None:
        loop, event = self._loop, self._wake
        if loop is not None and event is not None:
            loop.call_soon_threadsafe(event.set)

    async def _db_call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        if self._db is None:
            return fn(*args, **kwargs)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._db, lambda: fn(*args, **kwargs))

    async def run(self, stop: asyncio.Event, ready: Callable[[], None] | None = None) -> None:
        """Loop until ``stop`` is set; in-flight sends are finished and recorded first.

        ``ready`` is called once the connectors have started.
        """
        self._loop = asyncio.get_running_loop()
        self._wake = wake = asyncio.Event()
        self._freed = freed = asyncio.Event()
        self._recorded = asyncio.Event()
        for connector in self.connectors.values():
            await connector.start()
        if ready is not None:
            ready()
        failures = 0
        linger = self._spec.claim_linger
        woken_at = -linger  # loop time the last new deliveries were noticed
        renewing = asyncio.create_task(self._renew_leases())
        try:
            while not stop.is_set():
                wake.clear()
                freed.clear()
                try:
                    started = await self._claim_and_start()
                except Exception:
                    # The database is away (a restart, a full disk, a stuck server): wait
                    # and ask again, however long it takes; what was claimed goes on.
                    failures += 1
                    pause = min(self._spec.poll_interval * 2 ** min(failures, 10), _MAX_PAUSE)
                    log.exception("could not claim deliveries; trying again in %.1f s", pause)
                    await _first_of(stop, within=pause)
                    continue
                failures = 0
                if started and self._saturated:
                    continue  # there may be more due at once
                # Everything due was claimed: what comes next is woken for (a commit that
                # creates deliveries, a result that frees a slot) or polled for (a retry
                # coming due), not asked for at once with a claim that would find nothing.
                await _first_of(stop, wake, freed, within=self._spec.poll_interval)
                if wake.is_set() and not freed.is_set():
                    # New deliveries. Coming close behind the previous ones, more are
                    # likely within the linger: wait for them, to claim, send and record
                    # them together (see WorkerSpec.claim_linger). Farther apart, waiting
                    # would only add latency. A result that frees a slot or unblocks a
                    # queue ends the wait.
                    now = self._loop.time()
                    close, woken_at = now - woken_at < linger, now
                    if close:
                        await _first_of(stop, freed, within=linger)
            await self._drain()
        finally:
            renewing.cancel()
            for connector in self.connectors.values():
                await connector.close()
            if self._db is not None:
                self._db.shutdown(wait=True)

    async def run_once(self) -> int:
        """Claim one round for every destination, deliver and record it; the number handled.

        For tests and tooling; ``run`` is the long-lived loop.
        """
        # Fresh events each call: a caller may use a new event loop every time.
        self._wake = asyncio.Event()
        self._freed = asyncio.Event()
        self._recorded = asyncio.Event()
        started = await self._claim_and_start()
        await self._drain()
        return started

    async def _claim_and_start(self) -> int:
        """Claim for every destination with free slots; the number started. Sets
        ``_saturated`` when a destination got as many as it asked for (more may wait)."""
        started = 0
        self._saturated = False
        for name in self._active:
            free = self.plan.destinations[name].max_in_flight - self._in_flight[name]
            if free <= 0:
                self._saturated = True  # due deliveries may wait for a slot
                continue
            limit = min(free, self._spec.batch_size)
            claimed: list[Claimed] = await self._db_call(
                self.store.claim,
                self.name,
                limit=limit,
                lease_seconds=self._spec.lease_seconds,
                destination=name,
            )
            self._saturated = self._saturated or len(claimed) == limit
            leased_at = asyncio.get_running_loop().time()
            await self._prefetch(claimed)
            for c in claimed:
                self._held[c.id] = leased_at  # renewed from now on (see _renew_leases)
                self._in_flight[name] += 1
                task = asyncio.create_task(self._run_one(c))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            started += len(claimed)
        return started

    async def _run_one(self, c: Claimed) -> None:
        try:
            finished = await self._attempt(c)
        except BaseException:
            # A bug, or cancelled: not renewed, so the delivery returns when its lease ends.
            self._held.pop(c.id, None)
            raise
        self._results.append((c, finished))
        more = self._more
        if more is not None and not more.done():
            more.set_result(None)
        if len(self._results) == 1:
            task = asyncio.get_running_loop().create_task(self._record())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _record(self) -> None:
        """Commit the results in one transaction, then free their slots.

        Sends still running may join for up to ``worker.record_linger`` seconds: one
        commit for several results costs about what one costs alone, and on SQLite each
        commit takes the write lock that received messages wait for. With 8 monitors
        into one HIS, 2 ms raised delivery from ~1,190 to ~1,500–1,640 messages/s and
        5 ms to ~1,740–1,950, measured side by side (CHANGELOG). A result that is the
        last one running (one connection sending in turn) is recorded at once.
        """
        loop = asyncio.get_running_loop()
        await asyncio.sleep(0)  # let sends finishing in this loop turn join the group
        deadline = loop.time() + self._spec.record_linger
        lingering = True  # (no ``break`` in try/finally: mypyc does not compile one)
        while lingering and len(self._results) < min(sum(self._in_flight.values()), _RECORD_BATCH):
            self._more = loop.create_future()
            try:
                async with asyncio.timeout_at(deadline):
                    await self._more
            except TimeoutError:
                lingering = False
            finally:
                self._more = None
        batch, self._results = self._results, []
        if not batch:
            return
        # A few results: ask whether their queues hold more (the next delivery of a key
        # becomes claimable only now); a claim that would find nothing is skipped.
        queues = [(c.destination, c.ordering_key) for c, _ in batch]
        asked = len(queues) <= _QUEUES_ASKED
        try:
            waiting = await self._db_call(
                self.store.finish, [f for _, f in batch], queues=queues if asked else ()
            )
            recorded = True
        except Exception:
            # The rows stay in_flight in the database; their leases expire and they are
            # sent again with the same message ids (at least once), so only free the slots.
            log.exception("could not record %d attempts; leases will return them", len(batch))
            recorded = waiting = False
        for c, finished in batch:
            self._in_flight[c.destination] -= 1
            # Recorded, or (not recorded) left for its lease to return it: either way
            # no longer renewed.
            self._held.pop(c.id, None)
            if recorded:
                self.metrics.observe(c.destination, finished.new_status, c.created_at)
        assert self._freed is not None and self._recorded is not None
        if waiting or not (asked and recorded) or self._saturated:
            self._freed.set()  # claim now: something may be due that the slots held back
        self._recorded.set()

    async def _renew_leases(self) -> None:
        """Every third of a lease, renew those older than a third: a send waiting for a
        slow partner (an ACK timeout, or queued behind one for a connection) would
        otherwise outlast its lease, and the next claim, this worker's or another's,
        would take the delivery again and send it twice. Runs until cancelled."""
        lease = self._spec.lease_seconds
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(lease / 3)
            now = loop.time()
            due = [i for i, at in self._held.items() if now - at >= lease / 3]
            if not due:
                continue
            try:
                await self._db_call(self.store.renew, self.name, due, lease_seconds=lease)
            except Exception:
                log.exception("could not renew %d leases; they may be sent again", len(due))
                continue
            for i in due:
                if i in self._held:
                    self._held[i] = now

    async def _drain(self) -> None:
        assert self._recorded is not None
        while self._tasks or any(self._in_flight.values()):
            if self._tasks:
                await asyncio.gather(*list(self._tasks))
            if any(self._in_flight.values()):
                self._recorded.clear()
                await self._recorded.wait()

    async def _attempt(self, c: Claimed) -> Finished:
        started = time.time()
        number = c.attempts + 1
        dest = self.plan.destinations.get(c.destination)
        connector = self.connectors.get(c.destination)
        if dest is None or connector is None:
            result = SendResult(
                Outcome.PERMANENT,
                error=f"destination {c.destination!r} is not configured",
                error_class="config",
            )
            return self._finish(c, None, result, started, number, None)
        mapped: Payload | None = None
        if c.payload is None:
            try:
                mapped = await self._map(c, dest)
            except NothingToSend as exc:
                return self._skip(c, started, number, str(exc))
            except (MappingError, RegistryError) as exc:
                result = SendResult(Outcome.PERMANENT, error=str(exc), error_class="mapping")
                return self._finish(c, dest, result, started, number, None)
            except Exception as exc:
                log.exception("mapping %s failed for delivery %s", c.mapping, c.id)
                result = SendResult(
                    Outcome.PERMANENT, error=f"mapping crashed: {exc!r}", error_class="mapping"
                )
                return self._finish(c, dest, result, started, number, None)
            payload, content_type = mapped.body, mapped.content_type
        else:
            payload, content_type = c.payload, c.content_type or "application/octet-stream"
        message = Outbound(
            delivery_id=c.id,
            message_id=c.message_id,
            destination=c.destination,
            payload=payload,
            content_type=content_type,
            attempt=number,
            incident_id=c.incident_id,
            correlation_id=c.correlation_id,
            event_type=c.event_type,
        )
        try:
            result = await connector.send(message)
        except Exception as exc:
            log.exception("connector %s raised for delivery %s", c.destination, c.id)
            result = SendResult(
                Outcome.TRANSIENT, error=f"connector raised {exc!r}", error_class="connector"
            )
        return self._finish(c, dest, result, started, number, mapped)

    async def _map(self, c: Claimed, dest: Destination) -> Payload:
        function = lookup("mapping", c.mapping)
        route = next((r for r in self.plan.routes if r.name == c.route), None)
        options = route.options if route is not None else {}
        incident: tuple[Mapping[str, Any], ...] = ()
        if getattr(function, "needs_incident", False):
            incident = await self._history(c)
        ctx = MappingContext(
            message_id=c.message_id,
            created_at=datetime.fromtimestamp(c.created_at, tz=UTC),
            destination=dest.name,
            options=options,
            incident_events=incident,
        )
        assert c.event is not None
        payload: Payload = function(c.event, ctx)
        return payload

    async def _history(self, c: Claimed) -> tuple[Mapping[str, Any], ...]:
        """The incident's events up to the delivery, read only when the last history
        read for the incident is not of the length the claim counted (see Claimed)."""
        known = self._known_history(c)
        if known is not None:
            return known
        rows = await self._db_call(self.store.incident_events, c.incident_id, until=c.created_at)
        return self._keep_history(c.incident_id, tuple(rows), c.created_at)

    async def _prefetch(self, claimed: list[Claimed]) -> None:
        """Read the histories a claim's deliveries will need in one store call: on
        PostgreSQL each read is a round trip, which the deliveries would take in turn.
        Should it fail, each delivery reads its own."""
        wanted = [
            c
            for c in claimed
            if c.payload is None
            and getattr(_mapping_or_none(c.mapping), "needs_incident", False)
            and self._known_history(c) is None
        ]
        if len(wanted) < 2:
            return  # one is read by its delivery, as before
        try:
            histories = await self._db_call(
                self.store.incident_histories, [(c.incident_id, c.created_at) for c in wanted]
            )
        except Exception:
            log.exception("could not read %d incident histories at once", len(wanted))
            return
        for c, rows in zip(wanted, histories, strict=True):
            self._keep_history(c.incident_id, tuple(rows), c.created_at)

    def _known_history(self, c: Claimed) -> tuple[Mapping[str, Any], ...] | None:
        """The history the claim counted, when the kept one is it or lacks only its event.

        A history read up to an earlier ``until`` holds only events received by then, so
        it cannot hold the claimed event (received at ``created_at``, later); if the
        claim counts one event more, the claimed event is that one. It goes last when it
        occurred no earlier than the last kept event (ties go by reception, and it was
        received last); an event that occurred earlier belongs inside: read again.
        """
        known = self._histories.get(c.incident_id)
        if known is None:
            return None
        events = known.events
        if len(events) == c.history_size:
            self._histories.move_to_end(c.incident_id)
            return events
        if (
            len(events) == c.history_size - 1
            and known.until < c.created_at
            and c.event is not None
            and events
            and _in_order(events[-1], c.event)
        ):
            return self._keep_history(c.incident_id, (*events, c.event), c.created_at)
        return None

    def _keep_history(
        self, incident_id: str, history: tuple[Mapping[str, Any], ...], until: float
    ) -> tuple[Mapping[str, Any], ...]:
        replaced = self._histories.pop(incident_id, None)
        self._histories[incident_id] = _History(history, until)
        self._history_events += len(history) - (len(replaced.events) if replaced else 0)
        while len(self._histories) > 1 and (
            len(self._histories) > _HISTORY_INCIDENTS or self._history_events > _HISTORY_EVENTS
        ):
            _, dropped = self._histories.popitem(last=False)
            self._history_events -= len(dropped.events)
        return history

    def _skip(self, c: Claimed, started: float, number: int, reason: str) -> Finished:
        error = reason or "the mapping had nothing to send"
        return self._record_of(c, started, number, "skipped", DeliveryStatus.SKIPPED, error=error)

    def _finish(
        self,
        c: Claimed,
        dest: Destination | None,
        result: SendResult,
        started: float,
        number: int,
        mapped: Payload | None,
    ) -> Finished:
        error = result.error
        delay = 0.0
        if result.outcome is Outcome.DELIVERED:
            status = DeliveryStatus.DELIVERED
        elif result.outcome is Outcome.PERMANENT or dest is None:
            status = DeliveryStatus.DEAD
        else:
            retry_in = dest.retry.delay_after(number, result.retry_after)
            if retry_in is None:
                status = DeliveryStatus.DEAD
                error = f"gave up after {number} attempts: {result.error}"
            else:
                status = DeliveryStatus.PENDING
                delay = retry_in
        return self._record_of(
            c,
            started,
            number,
            result.outcome.value,
            status,
            delay=delay,
            status_code=result.status,
            response=result.response,
            error_class=result.error_class,
            error=error,
            mapped=mapped,
        )

    def _record_of(
        self,
        c: Claimed,
        started: float,
        number: int,
        outcome: str,
        status: DeliveryStatus,
        *,
        delay: float = 0.0,
        status_code: str | None = None,
        response: str | None = None,
        error_class: str | None = None,
        error: str | None = None,
        mapped: Payload | None = None,
    ) -> Finished:
        """The attempt as the store records it, timed from ``started`` to now."""
        now = time.time()
        return Finished(
            delivery_id=c.id,
            number=number,
            worker=self.name,
            started_at=started,
            latency_ms=(now - started) * 1000,
            outcome=outcome,
            new_status=status,
            next_attempt_at=now + delay,
            status=status_code,
            response=response,
            error_class=error_class,
            error=error,
            payload=mapped.body if mapped is not None else None,
            content_type=mapped.content_type if mapped is not None else None,
        )


class _History(NamedTuple):
    """An incident's events as read (or extended) for deliveries created up to ``until``."""

    events: tuple[Mapping[str, Any], ...]
    until: float


def _in_order(last: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Whether ``new`` occurred no earlier than ``last``; False when either time is
    unreadable or without an offset (the history is then read, never extended)."""
    before, after = _occurred(last), _occurred(new)
    return before is not None and after is not None and before <= after


def _occurred(event: Mapping[str, Any]) -> datetime | None:
    try:
        at = datetime.fromisoformat(str(event["occurred_at"]))
    except (KeyError, ValueError):
        return None
    return at if at.tzinfo is not None else None


def _mapping_or_none(mapping: str) -> Any:
    """The mapping function registered as ``mapping``, or None (its delivery fails)."""
    try:
        return lookup("mapping", mapping)
    except RegistryError:
        return None


async def _first_of(*events: asyncio.Event, within: float) -> None:
    """Return when any event is set or after ``within`` seconds."""
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=within, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
