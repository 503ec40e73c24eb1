"""The store seam: every query the engine relies on, for SQLite and PostgreSQL.

Methods are synchronous and each runs in one transaction; the engine calls them from
worker threads. The only back-end difference is how a worker claims deliveries.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import orjson
from sqlalchemy import Connection, Engine, event, func, insert, select, text, update
from sqlalchemy.engine import make_url

from hub.store.bodies import BodyCache
from hub.store.database import READ_ONLY, SqliteSync, is_sqlite, make_engine, upgrade
from hub.store.driver import Cursor, Driver
from hub.store.records import (
    Claimed,
    DeliveryStatus,
    EventAnswer,
    Finished,
    IngestJob,
    IngestOutcome,
    Rejected,
)
from hub.store.tables import (
    OPEN_ROWS,
    OPEN_STATUS,
    attempts,
    audit_log,
    deliveries,
    events,
    inbound_messages,
)
from hub.store.writelock import WriteLock

__all__ = ["MessagePage", "QueueStat", "ResendError", "Store"]

_T = TypeVar("_T")
_OPEN = (DeliveryStatus.PENDING.value, DeliveryStatus.IN_FLIGHT.value)

# Due deliveries that are the head of their (destination, ordering_key) queue: the oldest
# row of that key still pending or in flight. That one rule gives FIFO per key (a retrying
# head blocks its key) while different keys proceed in parallel. An expired lease makes an
# in-flight row claimable again (its worker died). Dead rows do not block.
# The status IN term matches the partial indexes over open rows (tables.py), so the scan
# walks open rows in id order and stops at the limit, and the head test is one index
# probe, whatever the delivered history. The head test is a scalar subquery rather than
# NOT EXISTS on purpose: PostgreSQL always runs it as a per-row index probe, whereas on a
# table not yet analyzed it planned the anti-join as a nested loop over every open row of
# the destination (quadratic: 1.1 s per claim at 5,000 pending).
_CLAIM = f"""
SELECT d.id FROM deliveries d{{indexed}}
WHERE d.{OPEN_STATUS}
  AND ((d.status = 'pending' AND d.next_attempt_at <= ?)
       OR (d.status = 'in_flight' AND d.lease_until < ?))
  {{only}}
  AND d.id = (
    SELECT min(e.id) FROM deliveries e
    WHERE e.destination = d.destination AND e.ordering_key = d.ordering_key
      AND e.{OPEN_STATUS})
ORDER BY d.id
LIMIT ?
"""
# SQLite, claiming for every destination: the open rows' partial index, read whole and
# sorted by id, rather than the table in id order from its first delivery ever.
_SQLITE_ALL_OPEN = " INDEXED BY ix_deliveries_open"
# PostgreSQL: rows another worker is claiming are skipped, not waited for. The head test
# still sees those rows, so a second worker can never take the next row of the same key.
_SKIP_LOCKED = " FOR UPDATE OF d SKIP LOCKED"
# One statement: lease the heads and return them with their event bodies.
_CLAIM_UPDATE = """
UPDATE deliveries SET status = 'in_flight', lease_until = ?, claimed_by = ?, updated_at = ?
WHERE id IN ({claim})
RETURNING id, message_id, event_id, incident_id, correlation_id, event_type, route, mapping,
  destination, ordering_key, attempts, created_at, payload, content_type,
  (SELECT {body} FROM events b WHERE b.event_id = CAST(deliveries.event_id AS TEXT)),
  (SELECT count(*) FROM events h
   WHERE h.incident_id = CAST(deliveries.incident_id AS TEXT)
     AND h.received_at <= deliveries.created_at)
"""
# The CAST is for SQLite (3.40): a RETURNING column compared bare made it scan every event
# for every claimed row (a claim cost 0.4 ms at 6,000 events, growing), whereas the CAST
# lets it probe the primary key; PostgreSQL plans both the same.
# A payload mapped in this attempt is kept for the retries (NULL keeps the one stored).
_FINISH = """
UPDATE deliveries SET status = ?, attempts = ?, next_attempt_at = ?, updated_at = ?,
  delivered_at = ?, last_error = ?, lease_until = NULL,
  payload = COALESCE(?, payload), content_type = COALESCE(?, content_type)
WHERE id = ? AND claimed_by = ? AND status = 'in_flight'
"""
# A lease renewed by the worker holding it (Worker._renew_leases).
_RENEW = """
UPDATE deliveries SET lease_until = ?
WHERE claimed_by = ? AND status = 'in_flight' AND id IN ({marks})
"""
# One probe of the open-rows index per queue (as the claim's head test reads it).
_OPEN_IN_QUEUE = f"""
SELECT 1 FROM deliveries WHERE destination = ? AND ordering_key = ?
  AND {OPEN_STATUS} LIMIT 1
"""
_INSERT_ATTEMPT = """
INSERT INTO attempts (delivery_id, number, worker, started_at, latency_ms, outcome, status,
  response, error_class, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
_INSERT_INBOUND = """
INSERT INTO inbound_messages (id, received_at, channel, source, content_type, raw, status,
  error, event_count, incident_id, correlation_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
_INSERT_EVENT = """
INSERT INTO events (event_id, inbound_id, type, incident_id, patient_ref, correlation_id,
  source, occurred_at, received_at, body, body_sha256) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
_INSERT_DELIVERY = """
INSERT INTO deliveries (message_id, event_id, inbound_id, incident_id, correlation_id,
  event_type, route, mapping, destination, ordering_key, status, attempts, created_at,
  updated_at, next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?, ?)
"""
# The events of several (incident, until) histories at once, in each history's order.
_HISTORY_EVENT_IDS = """
WITH wanted(n, incident_id, until) AS (VALUES {rows})
SELECT w.n, e.event_id FROM wanted w
JOIN events e ON e.incident_id = w.incident_id AND e.received_at <= w.until
ORDER BY w.n, e.occurred_at, e.received_at
"""
_EVENT_BODIES = "SELECT event_id, {body} FROM events WHERE event_id IN ({{marks}})"


class ResendError(ValueError):
    """The delivery does not exist or is still queued."""


@dataclass(frozen=True, slots=True)
class QueueStat:
    destination: str
    pending: int
    in_flight: int
    oldest_created_at: float | None


@dataclass(frozen=True, slots=True)
class MessagePage:
    items: list[dict[str, Any]]
    next_cursor: str | None


class Store:
    """The hub's persistence; one instance per process, safe to share between threads."""

    def __init__(
        self,
        url: str,
        *,
        engine: Engine | None = None,
        pool_size: int = 8,
        sync: SqliteSync = "full",
        statement_timeout: float | None = None,
    ) -> None:
        self.url = url
        self.sqlite = is_sqlite(url)
        self.engine = engine or make_engine(
            url, pool_size=pool_size, sync=sync, statement_timeout=statement_timeout
        )
        # Delivery bookkeeping (claim, finish) need not be fsynced: lost on power loss, a
        # claim returns to the queue and a recorded attempt is sent again under the same
        # message id (at least once, as after any crash). On SQLite with synchronous=FULL
        # those commits go through a synchronous=NORMAL engine, so each received message
        # costs one fsync (its ingest commit, which also flushes the WAL frames of earlier
        # bookkeeping commits) instead of three.
        self._bookkeeping = self.engine
        if engine is None and self.sqlite and sync == "full" and _on_disk(url):
            self._bookkeeping = make_engine(url, pool_size=pool_size, sync="normal")
        self._closed = False
        if engine is None:
            for own in {self.engine, self._bookkeeping}:
                event.listen(own, "checkin", self._close_if_closed)
        self._driver = Driver(self.engine)
        self._bookkeeping_driver = Driver(self._bookkeeping)
        lock = "" if self.sqlite else _SKIP_LOCKED
        body = "b.body" if self.sqlite else "b.body::text"
        self._claim_sql = {
            only: self._driver.sql(
                _CLAIM_UPDATE.format(
                    claim=self._claim_select(only) + lock,
                    body=body,
                )
            )
            for only in (False, True)
        }
        self._bodies = BodyCache(_BODY_CACHE)
        number = "REAL" if self.sqlite else "DOUBLE PRECISION"
        self._history_row = f"(CAST(? AS INTEGER), CAST(? AS TEXT), CAST(? AS {number}))"
        self._bodies_sql = _EVENT_BODIES.format(body="body" if self.sqlite else "body::text")
        # SQLite allows one writer: the group-commit writer, a worker's claim and finish
        # (in this process or a worker process) take turns here (see writelock).
        self._write_lock = WriteLock(_database_path(url)) if self.sqlite else None

    @classmethod
    def open(
        cls,
        url: str,
        *,
        migrate: bool = False,
        pool_size: int = 8,
        sync: SqliteSync = "full",
        statement_timeout: float | None = None,
    ) -> Store:
        """``sync``: SQLite commit durability, hub.yaml ``database_sync``;
        ``statement_timeout``: PostgreSQL only (see database.make_engine)."""
        store = cls(url, pool_size=pool_size, sync=sync, statement_timeout=statement_timeout)
        if migrate:
            upgrade(store.engine)
        return store

    def close(self) -> None:
        """Close every pooled connection; one still in use is closed when it is returned."""
        self._closed = True
        if self._write_lock is not None:
            self._write_lock.close()
        self._driver.close()
        self._bookkeeping_driver.close()
        self.engine.dispose()
        if self._bookkeeping is not self.engine:
            self._bookkeeping.dispose()

    def _close_if_closed(self, _dbapi_connection: Any, record: Any) -> None:
        # A call still running at close() (a thread its caller stopped waiting for)
        # returns its connection to the pool close() disposed of: close it now, rather
        # than when the collector finds that pool (psycopg warns about it then).
        if self._closed:
            record.invalidate()

    @contextlib.contextmanager
    def _write(self, *, bookkeeping: bool = False) -> Iterator[Connection]:
        """A transaction that writes; committed on exit, rolled back on error.

        ``bookkeeping``: delivery state that a power loss may roll back (see __init__).
        """
        engine = self._bookkeeping if bookkeeping else self.engine
        if self._write_lock is None:
            with engine.begin() as conn:
                yield conn
        else:
            with self._write_lock, engine.begin() as conn:
                yield conn

    @contextlib.contextmanager
    def _read(self) -> Iterator[Connection]:
        """A connection for reads only: on SQLite it takes no write lock (see database)."""
        with self.engine.connect().execution_options(**{READ_ONLY: True}) as conn:
            yield conn

    def _claim_select(self, only_one_destination: bool) -> str:
        """The claim's choice of due queue heads (see _CLAIM), for one destination or all."""
        if only_one_destination:
            return _CLAIM.format(indexed="", only="AND d.destination = ?")
        return _CLAIM.format(indexed=_SQLITE_ALL_OPEN if self.sqlite else "", only="")

    def ping(self) -> None:
        """Raise if the database does not answer; for readiness probes."""
        with self._read() as conn:
            conn.execute(text("SELECT 1"))

    # ---------------------------------------------------------------- ingest

    def ingest(self, jobs: Sequence[IngestJob]) -> list[IngestOutcome]:
        """Commit many received bodies in one transaction (group commit).

        A repeated event id creates nothing and answers as it was first answered; the
        same id with a different body is a conflict and rejects its whole body. Returns
        one outcome per job, in order, only after the commit.
        """
        driver = self._driver
        for attempt in range(3):
            try:
                with driver.transaction(lock=self._write_lock) as cursor:
                    return self._ingest(cursor, jobs)
            except driver.integrity_error:
                # Another process inserted one of these event ids after our read; the
                # retry reads it and answers as a replay.
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _ingest(self, cursor: Cursor, jobs: Sequence[IngestJob]) -> list[IngestOutcome]:
        driver = self._driver
        ids = list({e.event_id for job in jobs for e in job.events})
        known: dict[str, tuple[str, str]] = {}
        for chunk in _chunks(ids, 500):
            cursor.execute(
                driver.sql(
                    "SELECT event_id, inbound_id, body_sha256 FROM events"
                    f" WHERE event_id IN ({driver.placeholders(len(chunk))})"
                ),
                chunk,
            )
            known.update({r[0]: (r[1], r[2]) for r in cursor.fetchall()})

        inbound_rows: list[tuple[Any, ...]] = []
        event_rows: list[tuple[Any, ...]] = []
        delivery_rows: list[tuple[Any, ...]] = []
        plans: list[list[EventAnswer | str] | tuple[str, ...]] = []
        replayed_ids: set[str] = set()

        for job in jobs:
            conflicts = tuple(
                e.event_id
                for e in job.events
                if e.event_id in known and known[e.event_id][1] != e.body_sha256
            )
            if conflicts:
                inbound_rows.append(_conflict_row(job, conflicts))
                plans.append(conflicts)
                continue
            answers: list[EventAnswer | str] = []
            fresh = []
            for e in job.events:
                if e.event_id in known:
                    answers.append(e.event_id)
                    replayed_ids.add(e.event_id)
                    continue
                known[e.event_id] = (job.inbound_id, e.body_sha256)
                fresh.append(e)
                answers.append(
                    EventAnswer(
                        e.event_id,
                        job.inbound_id,
                        tuple((d.message_id, d.destination, d.route) for d in e.deliveries),
                    )
                )
            plans.append(answers)
            if not fresh:
                continue  # a pure repeat creates nothing
            first = fresh[0]
            at = job.received_at
            inbound_rows.append(
                (
                    job.inbound_id,
                    at,
                    job.channel,
                    job.source,
                    job.content_type,
                    job.raw,
                    "accepted",
                    None,
                    len(job.events),
                    first.incident_id,
                    first.correlation_id,
                )
            )
            for e in fresh:
                event_rows.append(
                    (
                        e.event_id,
                        job.inbound_id,
                        e.type,
                        e.incident_id,
                        e.patient_ref,
                        e.correlation_id,
                        e.source,
                        e.occurred_at,
                        at,
                        _json(e.body),
                        e.body_sha256,
                    )
                )
                for d in e.deliveries:
                    delivery_rows.append(
                        (
                            d.message_id,
                            e.event_id,
                            job.inbound_id,
                            e.incident_id,
                            e.correlation_id,
                            e.type,
                            d.route,
                            d.mapping,
                            d.destination,
                            d.ordering_key,
                            at,
                            at,
                            at,
                        )
                    )

        if inbound_rows:
            cursor.executemany(driver.sql(_INSERT_INBOUND), inbound_rows)
        if event_rows:
            cursor.executemany(driver.sql(_INSERT_EVENT), event_rows)
        if delivery_rows:
            cursor.executemany(driver.sql(_INSERT_DELIVERY), delivery_rows)
        replays = self._answers_for(cursor, replayed_ids, known)

        outcomes = []
        for plan in plans:
            if isinstance(plan, tuple):
                outcomes.append(IngestOutcome(conflicts=plan))
            else:
                outcomes.append(
                    IngestOutcome(
                        answers=tuple(a if isinstance(a, EventAnswer) else replays[a] for a in plan)
                    )
                )
        return outcomes

    def _answers_for(
        self, cursor: Cursor, event_ids: set[str], known: dict[str, tuple[str, str]]
    ) -> dict[str, EventAnswer]:
        # Rebuilt from the rows the first request created, in creation order, so a replay
        # answers with exactly the first answer. They are found through the message that
        # first brought each event (its deliveries came with it); 250 events and at most
        # as many messages keep a statement within 500 parameters.
        driver = self._driver
        found: dict[str, list[tuple[str, str, str]]] = {i: [] for i in event_ids}
        for chunk in _chunks(sorted(event_ids), 250):
            inbound = sorted({known[i][0] for i in chunk})
            cursor.execute(
                driver.sql(
                    "SELECT event_id, message_id, destination, route FROM deliveries"
                    f" WHERE inbound_id IN ({driver.placeholders(len(inbound))})"
                    f" AND event_id IN ({driver.placeholders(len(chunk))}) ORDER BY id"
                ),
                [*inbound, *chunk],
            )
            for event_id, message_id, destination, route in cursor.fetchall():
                found[event_id].append((message_id, destination, route))
        return {i: EventAnswer(i, known[i][0], tuple(found[i]), replayed=True) for i in event_ids}

    def reject(self, item: Rejected) -> None:
        """Keep a body the hub refused, with why: an invalid message is never lost."""
        with self._write() as conn:
            conn.execute(
                insert(inbound_messages),
                {
                    "id": item.inbound_id,
                    "received_at": item.received_at,
                    "channel": item.channel,
                    "source": item.source,
                    "content_type": item.content_type,
                    "raw": item.raw,
                    "status": "rejected",
                    "error": item.errors,
                    "event_count": 0,
                },
            )

    # ---------------------------------------------------------------- delivery

    def claim(
        self,
        worker: str,
        *,
        limit: int,
        lease_seconds: float,
        destination: str | None = None,
        now: float | None = None,
    ) -> list[Claimed]:
        """Lease up to ``limit`` due queue heads to ``worker``, of one destination or all.

        The caller must report every claimed delivery through :meth:`finish` before the
        lease ends, or another worker may take it over.
        """
        now = time.time() if now is None else now
        params: list[Any] = [now + lease_seconds, worker, now, now, now]
        if destination is not None:
            params.append(destination)
        params.append(limit)
        with self._bookkeeping_driver.transaction(lock=self._write_lock) as cursor:
            cursor.execute(self._claim_sql[destination is not None], params)
            rows = sorted(cursor.fetchall(), key=lambda r: int(r[0]))
        return [_claimed(r, self._bodies) for r in rows]

    def renew(
        self,
        worker: str,
        delivery_ids: Sequence[int],
        *,
        lease_seconds: float,
        now: float | None = None,
    ) -> int:
        """Extend ``worker``'s leases on deliveries it is still sending; how many it holds.

        One taken over meanwhile (its lease had ended) is not ``worker``'s any more and
        stays with its new holder.
        """
        now = time.time() if now is None else now
        renewed = 0
        with self._bookkeeping_driver.transaction(lock=self._write_lock) as cursor:
            for chunk in _chunks(list(delivery_ids), 500):
                marks = self._bookkeeping_driver.placeholders(len(chunk))
                sql = self._bookkeeping_driver.sql(_RENEW.format(marks=marks))
                cursor.execute(sql, [now + lease_seconds, worker, *chunk])
                renewed += cursor.rowcount
        return renewed

    def finish(
        self, results: Sequence[Finished], *, queues: Iterable[tuple[str, str]] = ()
    ) -> bool:
        """Record attempts and move their deliveries on, in one transaction.

        A row whose lease was taken over by another worker is left alone: the attempt is
        still recorded, because it happened. Returns whether any of ``queues``
        ((destination, ordering key) pairs: those of the results) still holds an open
        delivery, which a finished one may have been holding back.
        """
        if not results:
            return False
        updates: list[tuple[Any, ...]] = []
        attempt_rows: list[tuple[Any, ...]] = []
        for r in results:
            at = r.started_at + r.latency_ms / 1000
            delivered = at if r.new_status is DeliveryStatus.DELIVERED else None
            status = r.new_status.value
            updates.append(
                (
                    *(status, r.number, r.next_attempt_at, at, delivered, r.error),
                    *(r.payload, r.content_type, r.delivery_id, r.worker),
                )
            )
            attempt_rows.append(
                (
                    *(r.delivery_id, r.number, r.worker, r.started_at, r.latency_ms),
                    *(r.outcome, r.status, r.response, r.error_class, r.error),
                )
            )
        driver = self._bookkeeping_driver
        with driver.transaction(lock=self._write_lock) as cursor:
            cursor.executemany(driver.sql(_FINISH), updates)
            cursor.executemany(driver.sql(_INSERT_ATTEMPT), attempt_rows)
            for queue in dict.fromkeys(queues):
                cursor.execute(driver.sql(_OPEN_IN_QUEUE), queue)
                if cursor.fetchall():
                    return True
        return False

    def recover(self, worker: str | None = None) -> int:
        """Return in-flight claims to the queue: every one, or those of ``worker``.

        Every one: the start-up sweep, right only when no other worker shares the
        database (the embedded SQLite default); elsewhere a dead worker's claims come
        back when their lease ends, or at once when whoever saw it die names it.
        """
        # OPEN_ROWS as written in the partial indexes, so SQLite reads open rows only.
        in_flight = deliveries.c.status == DeliveryStatus.IN_FLIGHT.value
        stmt = update(deliveries).where(OPEN_ROWS, in_flight)
        if worker is not None:
            stmt = stmt.where(deliveries.c.claimed_by == worker)
        with self._write() as conn:
            result = conn.execute(
                stmt.values(status=DeliveryStatus.PENDING.value, lease_until=None, claimed_by=None)
            )
            return int(result.rowcount)

    def resend(self, delivery_id: int, *, actor: str, remap: bool = False) -> None:
        """Queue a dead or delivered delivery again, keeping its message id.

        ``remap`` drops the stored payload so the mapping runs again (after a fix).
        """
        now = time.time()
        with self._write() as conn:
            row = conn.execute(
                select(deliveries.c.status).where(deliveries.c.id == delivery_id)
            ).first()
            if row is None:
                raise ResendError(f"no delivery {delivery_id}")
            if row.status in _OPEN:
                raise ResendError(f"delivery {delivery_id} is still {row.status}")
            values: dict[str, Any] = {
                "status": DeliveryStatus.PENDING.value,
                "attempts": 0,
                "next_attempt_at": now,
                "updated_at": now,
                "delivered_at": None,
                "claimed_by": None,
                "lease_until": None,
            }
            if remap:
                values.update(payload=None, content_type=None)
            conn.execute(update(deliveries).where(deliveries.c.id == delivery_id).values(values))
            self._audit(conn, actor, "delivery.resend", str(delivery_id), {"remap": remap})

    def incident_events(self, incident_id: str, *, until: float) -> list[dict[str, Any]]:
        """Bodies of an incident's events received up to ``until``, for stateful mappings.

        The dicts are shared with later calls (see bodies): read them, never change
        them. Only the bodies not held are read and decoded, so a long incident costs a
        delivery one event id per event.
        """
        return self.incident_histories([(incident_id, until)])[0]

    def incident_histories(self, wanted: Sequence[tuple[str, float]]) -> list[list[dict[str, Any]]]:
        """:meth:`incident_events` of each (incident id, until), in one transaction and
        two statements for them all: a worker reads the histories of a claim at once."""
        ids: list[list[str]] = [[] for _ in wanted]
        texts: dict[str, str] = {}
        with self._driver.transaction(read_only=True) as cursor:
            for start in range(0, len(wanted), 300):
                chunk = wanted[start : start + 300]
                rows = ", ".join([self._history_row] * len(chunk))
                params = [v for n, (i, u) in enumerate(chunk, start) for v in (n, i, u)]
                cursor.execute(self._driver.sql(_HISTORY_EVENT_IDS.format(rows=rows)), params)
                for n, event_id in cursor.fetchall():
                    ids[n].append(event_id)
            everything = [event_id for history in ids for event_id in history]
            held = self._bodies.held(everything)
            missing = sorted({i for i in everything if i not in held})
            for chunk_ids in _chunks(missing, 500):
                marks = ", ".join("?" * len(chunk_ids))
                sql = self._driver.sql(self._bodies_sql.format(marks=marks))
                cursor.execute(sql, chunk_ids)
                texts.update(cursor.fetchall())
        out = []
        for history in ids:
            bodies = self._bodies.in_order(history, held, texts)
            held.update(zip(history, bodies, strict=True))  # decoded once for all
            out.append(bodies)
        return out

    # ---------------------------------------------------------------- browse

    def list_messages(
        self,
        *,
        incident_id: str | None = None,
        status: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> MessagePage:
        """Newest first, keyset-paged on (received_at, id) so deep pages stay cheap."""
        m = inbound_messages
        stmt = select(
            m.c.id,
            m.c.received_at,
            m.c.channel,
            m.c.source,
            m.c.content_type,
            m.c.status,
            m.c.event_count,
            m.c.incident_id,
            m.c.correlation_id,
            m.c.error,
        )
        if incident_id is not None:
            # Through the events' incident index (the column has none: migration 0004).
            brought = select(events.c.inbound_id).where(events.c.incident_id == incident_id)
            stmt = stmt.where(m.c.id.in_(brought), m.c.incident_id == incident_id)
        if status is not None:
            stmt = stmt.where(m.c.status == status)
        if since is not None:
            stmt = stmt.where(m.c.received_at >= since)
        if until is not None:
            stmt = stmt.where(m.c.received_at < until)
        if cursor:
            at_text, _, last_id = cursor.partition("_")
            at = float(at_text)
            stmt = stmt.where(
                (m.c.received_at < at) | ((m.c.received_at == at) & (m.c.id < last_id))
            )
        stmt = stmt.order_by(m.c.received_at.desc(), m.c.id.desc()).limit(limit + 1)
        with self._read() as conn:
            rows = [dict(r._mapping) for r in conn.execute(stmt)]
        next_cursor = None
        if len(rows) > limit:
            rows = rows[:limit]
            last = rows[-1]
            next_cursor = f"{last['received_at']!r}_{last['id']}"
        return MessagePage(rows, next_cursor)

    def get_message(self, inbound_id: str, *, actor: str) -> dict[str, Any] | None:
        """A message with its events, deliveries and attempts; the read is audited."""
        with self._write() as conn:
            row = conn.execute(
                select(inbound_messages).where(inbound_messages.c.id == inbound_id)
            ).first()
            if row is None:
                return None
            message = dict(row._mapping)
            message["events"] = [
                dict(r._mapping)
                for r in conn.execute(
                    select(events)
                    .where(events.c.inbound_id == inbound_id)
                    .order_by(events.c.occurred_at)
                )
            ]
            drows = [
                dict(r._mapping)
                for r in conn.execute(
                    select(deliveries)
                    .where(deliveries.c.inbound_id == inbound_id)
                    .order_by(deliveries.c.id)
                )
            ]
            by_id = {d["id"]: d for d in drows}
            for d in drows:
                d["attempt_log"] = []
            if by_id:
                for a in conn.execute(
                    select(attempts)
                    .where(attempts.c.delivery_id.in_(list(by_id)))
                    .order_by(attempts.c.id)
                ):
                    by_id[a.delivery_id]["attempt_log"].append(dict(a._mapping))
            message["deliveries"] = drows
            self._audit(conn, actor, "message.read", inbound_id, None)
        return message

    def delivery_by_message_id(self, message_id: str) -> dict[str, Any] | None:
        with self._read() as conn:
            row = conn.execute(
                select(deliveries).where(deliveries.c.message_id == message_id)
            ).first()
            return None if row is None else dict(row._mapping)

    def queue_stats(self) -> list[QueueStat]:
        """Depth and oldest pending age per destination, for /metrics and `hub` status."""
        d = deliveries
        stmt = (
            select(d.c.destination, d.c.status, func.count(), func.min(d.c.created_at))
            .where(OPEN_ROWS)  # as written in the partial indexes: open rows only
            .group_by(d.c.destination, d.c.status)
        )
        acc: dict[str, list[Any]] = {}
        with self._read() as conn:
            for dest, status, count, oldest in conn.execute(stmt):
                entry = acc.setdefault(dest, [0, 0, None])
                entry[0 if status == DeliveryStatus.PENDING.value else 1] += count
                if oldest is not None and (entry[2] is None or oldest < entry[2]):
                    entry[2] = oldest
        return [QueueStat(k, v[0], v[1], v[2]) for k, v in sorted(acc.items())]

    @staticmethod
    def _audit(
        conn: Connection, actor: str, action: str, subject: str | None, details: Any
    ) -> None:
        conn.execute(
            insert(audit_log),
            {
                "at": time.time(),
                "actor": actor,
                "action": action,
                "subject": subject,
                "details": details,
            },
        )


def _conflict_row(job: IngestJob, conflicts: tuple[str, ...]) -> tuple[Any, ...]:
    errors = [
        {
            "path": "event_id",
            "reason": f"event id {c} was already accepted with a different body",
            "type": "conflict",
        }
        for c in conflicts
    ]
    return (
        job.inbound_id,
        job.received_at,
        job.channel,
        job.source,
        job.content_type,
        job.raw,
        "rejected",
        _json(errors),
        0,
        None,
        None,
    )


_BODY_CACHE = 8192  # decoded event bodies kept for incident histories (~2 KB each)


def _claimed(row: Sequence[Any], bodies: BodyCache) -> Claimed:
    """A claim's RETURNING row: Claimed's first 12 fields in order, then the payload,
    its content type, the event body and the history size."""
    payload, content_type, body, history_size = row[12:16]
    return Claimed._make(
        (
            *row[:12],
            None if payload is None else bytes(payload),
            content_type,
            bodies.decoded(row[2], body) if payload is None else None,
            int(history_size),
        )
    )


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def _on_disk(url: str) -> bool:
    return _database_path(url) is not None


def _database_path(url: str) -> Path | None:
    """The SQLite file of ``url``; None in memory (or for a ``file:`` URI)."""
    database = make_url(url).database
    if not database or database == ":memory:" or str(database).startswith("file:"):
        return None
    return Path(database).resolve()


def _chunks(items: Sequence[_T], size: int) -> Iterable[Sequence[_T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
