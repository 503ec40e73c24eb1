"""Driver-level transactions for the per-message path (ingest, claim, finish).

SQLAlchemy Core compiles each statement and processes each result row: measured here at
100–150 µs per statement, several times what SQLite takes to run it. A received message
costs four transactions of such statements, so the hot path sends fixed SQL straight to
the DB-API driver (sqlite3 or psycopg) through the engine's pool; everything else keeps
SQLAlchemy. SQL is written once with ``?`` placeholders and rewritten for psycopg.

The few threads that run these transactions (the ingest writer, an event loop, a
worker's store thread) each keep one connection of their own, taken out of the pool
(detached): a pool checkout and checkin cost ~6 of the ~12 µs an empty transaction took.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

from sqlalchemy import Engine

__all__ = ["Cursor", "Driver"]


class Cursor(Protocol):
    """The part of a DB-API cursor the store uses (sqlite3 and psycopg both have it)."""

    def execute(self, sql: str, params: Any = ..., /) -> Any: ...

    def executemany(self, sql: str, params: Any, /) -> Any: ...

    def fetchall(self) -> Sequence[Any]: ...

    @property
    def rowcount(self) -> int: ...

    def close(self) -> None: ...


# Threads of one process that keep a connection; any further thread uses the pool.
MAX_KEPT = 4


class Driver:
    """Raw transactions on one engine, with the dialect's placeholders and BEGIN."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.sqlite = engine.dialect.name == "sqlite"
        dbapi = engine.dialect.dbapi
        assert dbapi is not None
        self.integrity_error: type[Exception] = dbapi.IntegrityError
        self._cache: dict[str, str] = {}
        self._kept: dict[int, Any] = {}  # thread id -> its detached connection
        self._busy: set[int] = set()  # threads in a transaction on their kept connection
        self._kept_lock = threading.Lock()
        self._closed = False

    def close(self) -> None:
        """Close the kept connections; one in use is closed when its transaction ends."""
        with self._kept_lock:
            self._closed = True
            kept, self._kept = self._kept, {}
            busy = set(self._busy)
        for ident, raw in kept.items():
            if ident in busy and ident != threading.get_ident():
                continue  # its thread closes it when its transaction ends
            _close_quietly(raw)

    def _connection(self) -> tuple[Any, bool]:
        """This thread's kept connection, marked busy (True), or a pooled one (False)."""
        ident = threading.get_ident()
        self._busy.add(ident)  # before the look-up: close() then leaves it to us
        raw = self._kept.get(ident)
        if raw is not None:
            return raw, True
        with self._kept_lock:
            if not self._closed and len(self._kept) < MAX_KEPT:
                raw = self.engine.raw_connection()
                raw.detach()  # out of the pool: closed, not returned, when done with
                self._kept[ident] = raw
                return raw, True
        self._busy.discard(ident)
        return self.engine.raw_connection(), False

    def _drop(self, raw: Any) -> None:
        """Forget and close this thread's kept connection (after an error, or a close)."""
        with self._kept_lock:
            if self._kept.get(threading.get_ident()) is raw:
                del self._kept[threading.get_ident()]
        _close_quietly(raw)

    def sql(self, text: str) -> str:
        """``text`` with ``?`` placeholders, in this driver's paramstyle."""
        if self.sqlite:
            return text
        out = self._cache.get(text)
        if out is None:
            out = self._cache[text] = text.replace("?", "%s")
        return out

    def placeholders(self, count: int) -> str:
        return ", ".join("?" * count)

    @contextlib.contextmanager
    def transaction(
        self, *, read_only: bool = False, lock: AbstractContextManager[Any] | None = None
    ) -> Iterator[Cursor]:
        """A cursor in one transaction: committed on exit, rolled back on error.

        ``lock`` (the SQLite write lock, see writelock) is held from BEGIN to COMMIT
        only: taking a pooled connection and a cursor, and returning them, happen
        outside it. SQLite connections run with the driver's own transaction handling
        off (see database), so the write lock is taken here at BEGIN IMMEDIATE, as
        SQLAlchemy's hook does.
        """
        raw, kept = self._connection()
        failed = False
        try:
            cursor = raw.cursor()
            try:
                with lock if lock is not None else contextlib.nullcontext():
                    try:
                        if self.sqlite:
                            cursor.execute("BEGIN" if read_only else "BEGIN IMMEDIATE")
                        yield cursor
                        if self.sqlite:
                            cursor.execute("COMMIT")
                        else:
                            raw.commit()
                    except BaseException:
                        failed = True
                        raw.rollback()
                        raise
            finally:
                cursor.close()
        except BaseException:
            failed = True
            raise
        finally:
            if not kept:
                raw.close()
            else:
                self._busy.discard(threading.get_ident())
                if failed or self._closed:
                    # After an error the connection may be broken (a server restart):
                    # the next transaction takes a fresh one.
                    self._drop(raw)


def _close_quietly(raw: Any) -> None:
    with contextlib.suppress(Exception):
        raw.close()
