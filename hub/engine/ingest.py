"""Accepting events: parse, fan out, and commit durably before anyone is answered.

Concurrent submissions are committed together (group commit): one transaction and one
fsync for many senders, each still answered only after the commit that holds its
message. On PostgreSQL one writer thread owns those transactions, so a server that
stops answering holds that thread, not the event loop. On SQLite the group is gathered
and committed on the event loop itself: the bodies submitted within two turns of the
loop form one group. On a writer thread there, with eight monitors on 2 cores, a
commit of ~5 bodies took ~1.2 ms of wall time for ~0.4 ms of work and ~0.2 ms of
waiting for a worker's write lock; we read the rest as waits for the GIL, which the
sqlite3 module gives up and takes back around every statement while the loop runs. The
senders waited on those commits and a quarter of the CPU stood idle (CHANGELOG). A
sender known to be alone (the only connection of an MLLP listener, which waits for each
ACK) is committed at once, with no turn to wait for others.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import orjson

from hub.engine.metrics import HubMetrics
from hub.engine.routing import Router
from hub.ids import new_id
from hub.model.errors import EventValidationError
from hub.model.events import Event, dump_event, parse_events
from hub.store.records import IngestJob, IngestOutcome, NewEvent, Rejected
from hub.store.store import Store

__all__ = ["GroupCommitWriter", "IngestResult", "Ingestor"]

log = logging.getLogger("hub.ingest")


class IngestResult(NamedTuple):
    inbound_id: str
    outcome: IngestOutcome | None = None  # None when the body was invalid
    errors: tuple[dict[str, str], ...] = ()


# A submitted job, the future its sender awaits and the loop that future belongs to.
_Waiting = tuple[IngestJob, asyncio.Future[IngestOutcome], asyncio.AbstractEventLoop]


class GroupCommitWriter:
    """Batches whatever is waiting into one ingest transaction: on its own thread, or on
    the event loop the bodies were submitted on (``on_loop``, SQLite's default)."""

    def __init__(self, store: Store, *, max_batch: int = 500, on_loop: bool | None = None) -> None:
        """``on_loop``: gather and commit on the submitting event loop instead of the
        thread; by default on SQLite (see the module doc)."""
        self._store = store
        self._max_batch = max_batch
        self.on_loop = store.sqlite if on_loop is None else on_loop
        # Bodies gathered on each event loop for its next commit there (on_loop).
        self._gathering: dict[asyncio.AbstractEventLoop, list[_Waiting]] = {}
        self._queue: queue.SimpleQueue[_Waiting | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="hub-ingest-writer", daemon=True)
        self._started = False
        self._busy = False  # a batch taken from the queue is being committed
        # Called after each commit that created deliveries (wakes the workers).
        self.committed: list[Callable[[], None]] = []

    def start(self) -> None:
        if not self._started and not self.on_loop:
            self._started = True
            self._thread.start()

    def stop(self) -> None:
        if self._started:
            self._queue.put(None)
            self._thread.join()
            self._started = False

    @property
    def idle(self) -> bool:
        """Nothing queued, gathered or being committed (a hint: it may change at once)."""
        return not self._busy and self._queue.empty() and not self._gathering

    def commit_here(self, job: IngestJob) -> IngestOutcome:
        """Commit ``job`` in the calling thread, as the writer would, outside any group."""
        [outcome] = self._store.ingest([job])
        self._notify([job])
        return outcome

    def _notify(self, jobs: Sequence[IngestJob]) -> None:
        """Wake the workers, if the jobs made deliveries (a replay makes none: the store
        answers it with the first one's)."""
        if any(event.deliveries for job in jobs for event in job.events):
            for callback in self.committed:
                callback()

    def submit(self, job: IngestJob) -> asyncio.Future[IngestOutcome]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[IngestOutcome] = loop.create_future()
        if not self.on_loop:
            self._queue.put((job, future, loop))
            return future
        gathered = self._gathering.setdefault(loop, [])
        gathered.append((job, future, loop))
        if len(gathered) >= self._max_batch:
            self._commit_gathered(loop, 0)
        elif len(gathered) == 1:
            loop.call_soon(self._commit_gathered, loop, _GATHER_TURNS - 1)
        return future

    def _commit_gathered(self, loop: asyncio.AbstractEventLoop, turns: int) -> None:
        """After ``turns`` more turns of the loop, commit what it gathered."""
        if turns > 0:
            loop.call_soon(self._commit_gathered, loop, turns - 1)
            return
        batch = self._gathering.pop(loop, [])
        if batch:  # else committed already, at max_batch
            self._commit(batch, _answer_here)

    def _commit(self, batch: Sequence[_Waiting], answer: _Answer) -> None:
        """Commit the batch's jobs in one transaction, answer each sender, then wake the
        workers; a failed commit answers every sender with its exception."""
        jobs = [job for job, _, _ in batch]
        self._busy = True
        try:
            outcomes = self._store.ingest(jobs)
        except Exception as exc:
            self._busy = False
            log.exception("ingest commit failed for %d bodies", len(batch))
            answer(batch, [exc] * len(batch))
            return
        self._busy = False
        answer(batch, outcomes)
        self._notify(jobs)

    def _run(self) -> None:
        stopping = False
        while not stopping:
            item = self._queue.get()
            if item is None:
                break
            self._busy = True
            batch = [item]
            while len(batch) < self._max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stopping = True
                    break
                batch.append(nxt)
            self._commit(batch, _answer)


def _field_errors(exc: EventValidationError) -> tuple[dict[str, str], ...]:
    return tuple({"path": e.path, "reason": e.reason, "type": e.error_type} for e in exc.errors)


# Turns of the event loop a gathered group waits for further bodies (on_loop). A body
# whose bytes arrive in one turn reaches submit in the next, when its task runs; two
# turns let the bodies of one burst of arrivals join. Measured with eight monitors on 2
# cores: one turn gathered too few to gain, three no more than two.
_GATHER_TURNS = 2


_Answer = Callable[[Sequence[_Waiting], Sequence[IngestOutcome | Exception]], None]


def _answer_here(batch: Sequence[_Waiting], answers: Sequence[IngestOutcome | Exception]) -> None:
    """Settle the batch's futures on their loop, which is the running one (on_loop)."""
    _settle([(future, answer) for (_, future, _), answer in zip(batch, answers, strict=True)])


def _answer(batch: Sequence[_Waiting], answers: Sequence[IngestOutcome | Exception]) -> None:
    """From the writer thread: settle the batch's futures with one wake-up per event
    loop, not one per body."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[IngestOutcome], Any]]]
    by_loop = {}
    for (_, future, loop), answer in zip(batch, answers, strict=True):
        by_loop.setdefault(loop, []).append((future, answer))
    for loop, settled in by_loop.items():
        loop.call_soon_threadsafe(_settle, settled)


def _settle(settled: Sequence[tuple[asyncio.Future[IngestOutcome], Any]]) -> None:
    for future, answer in settled:
        if future.done():
            continue
        if isinstance(answer, Exception):
            future.set_exception(answer)
        else:
            future.set_result(answer)


class Ingestor:
    """Turns a received body into a durable inbound message, events and deliveries."""

    def __init__(
        self, store: Store, router: Router, writer: GroupCommitWriter, metrics: HubMetrics
    ) -> None:
        self.store = store
        self.router = router
        self.writer = writer
        self.metrics = metrics

    async def submit(
        self,
        raw: bytes,
        *,
        channel: str = "http",
        content_type: str | None = "application/json",
        source: str | None = None,
        allowed_sources: frozenset[str] | None = None,
    ) -> IngestResult:
        """Answer only after the body and every delivery it causes are committed.

        An invalid body, or one with an event from a source the caller may not speak
        for, is stored as rejected and answered with its field errors.
        """
        return await self._accept(raw, raw, channel, content_type, source, allowed_sources, False)

    async def submit_foreign(
        self,
        raw: bytes,
        events: Sequence[Mapping[str, Any]],
        *,
        channel: str,
        content_type: str | None,
        source: str | None = None,
        alone: bool = False,
    ) -> IngestResult:
        """Store a body received in a foreign format with the events converted from it.

        For sources that are not canonical JSON (HL7 v2 over MLLP): the converter's
        event dicts are validated exactly like POSTed events (error paths
        ``events[i]...``) and stored with the original ``raw`` bytes. Answers only after
        the commit; invalid events reject the whole body, kept raw as rejected. ``alone``:
        no other sender is waiting (see the module doc).
        """
        canonical = orjson.dumps(list(events))
        return await self._accept(raw, canonical, channel, content_type, source, None, alone)

    async def _accept(
        self,
        raw: bytes,
        canonical: bytes,
        channel: str,
        content_type: str | None,
        source: str | None,
        allowed_sources: frozenset[str] | None,
        alone: bool,
    ) -> IngestResult:
        """Validate ``canonical`` (events as JSON), then store ``raw`` as accepted or not."""
        now = time.time()
        inbound_id = new_id(now)
        try:
            parsed = parse_events(canonical)
            errors: tuple[dict[str, str], ...] = ()
        except EventValidationError as exc:
            errors = _field_errors(exc)
        if not errors and allowed_sources is not None and "*" not in allowed_sources:
            errors = tuple(
                {
                    "path": f"events[{i}].source" if len(parsed) > 1 else "source",
                    "reason": f"this client may not send events from source {e.source!r}",
                    "type": "forbidden",
                }
                for i, e in enumerate(parsed)
                if e.source not in allowed_sources
            )
        if errors:
            await self._reject(inbound_id, now, raw, errors, channel, content_type, source)
            return IngestResult(inbound_id, errors=errors)
        job = self._job(inbound_id, now, raw, parsed, channel, content_type, source)
        if alone and self.store.sqlite and self.writer.idle:
            outcome = self.writer.commit_here(job)
        else:
            outcome = await self.writer.submit(job)
        if outcome.conflicts:
            self.metrics.rejected.inc()
        for new, answer in zip(job.events, outcome.answers, strict=False):
            if not answer.replayed:
                self.metrics.received_one(new.type)
        return IngestResult(inbound_id, outcome)

    async def reject(
        self,
        raw: bytes,
        errors: Sequence[Mapping[str, str]],
        *,
        channel: str,
        content_type: str | None,
        source: str | None = None,
    ) -> str:
        """Keep a body no event could be read from, with why; returns its inbound id."""
        now = time.time()
        inbound_id = new_id(now)
        await self._reject(inbound_id, now, raw, errors, channel, content_type, source)
        return inbound_id

    async def _reject(
        self,
        inbound_id: str,
        now: float,
        raw: bytes,
        errors: Sequence[Mapping[str, str]],
        channel: str,
        content_type: str | None,
        source: str | None,
    ) -> None:
        listed = [dict(e) for e in errors]
        rejected = Rejected(inbound_id, now, channel, source, content_type, raw, listed)
        await asyncio.to_thread(self.store.reject, rejected)
        self.metrics.rejected.inc()

    def _job(
        self,
        inbound_id: str,
        now: float,
        raw: bytes,
        parsed: Sequence[Event],
        channel: str,
        content_type: str | None,
        source: str | None,
    ) -> IngestJob:
        new_events = []
        for event in parsed:
            body = dump_event(event)
            digest = hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()
            new_events.append(
                NewEvent(
                    event_id=event.event_id,
                    type=event.type,
                    incident_id=event.incident_id,
                    patient_ref=event.patient_ref,
                    correlation_id=event.correlation_id,
                    source=event.source,
                    occurred_at=event.occurred_at.timestamp(),
                    body=body,
                    body_sha256=digest,
                    deliveries=self.router.fan_out(body, now),
                )
            )
        return IngestJob(
            inbound_id=inbound_id,
            received_at=now,
            channel=channel,
            source=source or new_events[0].source,
            content_type=content_type,
            raw=raw,
            events=tuple(new_events),
        )
