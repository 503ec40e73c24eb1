"""Driver-level transactions for the per-message path (ingest, claim, finish).

SQLAlchemy Core compiles each statement and processes each result row: measured here at
100–150 µs per statement, several times what SQLite takes to run it. A received message
costs four transactions of such statements, so the hot path sends fixed SQL straight to
the DB-API driver (sqlite3 or psycopg) through the engine's pool; everything else keeps
SQLAlchemy. SQL is written once with ``?`` placeholders and rewritten for psycopg.
"""

from __future__ import annotations

import contextlib
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

    def close(self) -> None: ...


class Driver:
    """Raw transactions on one engine, with the dialect's placeholders and BEGIN."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.sqlite = engine.dialect.name == "sqlite"
        dbapi = engine.dialect.dbapi
        assert dbapi is not None
        self.integrity_error: type[Exception] = dbapi.IntegrityError
        self._cache: dict[str, str] = {}

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
        raw = self.engine.raw_connection()
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
                        raw.rollback()
                        raise
            finally:
                cursor.close()
        finally:
            raw.close()
