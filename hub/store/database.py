"""Database engines for the two supported back ends, and schema migration.

SQLite runs in WAL mode with ``synchronous=FULL`` by default (a commit survives power
loss); ``sync="normal"`` (hub.yaml ``database_sync``) selects ``synchronous=NORMAL``,
whose commits survive a crash of the process but not of the OS. SQLite takes its write
lock at BEGIN, so two writers never deadlock on a lock upgrade. A
connection with the execution option ``READ_ONLY`` begins a deferred transaction instead:
in WAL mode a reader needs no lock, so reads never wait behind writers.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import orjson
from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

__all__ = [
    "READ_ONLY",
    "WAL_CHECKPOINT_PAGES",
    "SqliteSync",
    "alembic_config",
    "is_sqlite",
    "make_engine",
    "upgrade",
]

READ_ONLY = "hub_read_only"  # execution option: this connection only reads
SqliteSync = Literal["full", "normal"]
_SYNCHRONOUS: dict[str, str] = {"full": "FULL", "normal": "NORMAL"}
# WAL pages after which a commit checkpoints them into the database file (SQLite's
# default is 1,000, ~4 MB). A checkpoint writes each page once however often the WAL
# holds it, and the hub's hot pages (index tails, the queues' leaves) are written by
# every commit: at 8,000 (~32 MB of WAL) eight monitors ran 6-9% more messages/s end
# to end at ~5% less CPU per message (benchmarks/README.md, ninth round).
WAL_CHECKPOINT_PAGES = 8000
# libpq: probe an idle connection after 30 s, every 10 s, give up after 3 unanswered.
_KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def _json_dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def make_engine(
    url: str,
    *,
    pool_size: int = 8,
    sync: SqliteSync = "full",
    statement_timeout: float | None = None,
) -> Engine:
    """An engine configured for the hub's access pattern on either back end.

    ``sync`` is SQLite's durability (``PRAGMA synchronous`` in WAL mode): ``full`` fsyncs
    every commit (power-loss safe); ``normal`` fsyncs only at checkpoints, so a commit
    survives a crash of this process but not an OS crash or power loss. Ignored for
    PostgreSQL.

    ``statement_timeout`` (seconds, PostgreSQL only): a statement the server has not
    finished by then fails, and TCP keepalives notice a server or network gone silent
    within about a minute, so a caller waiting on the database (a worker process runs
    its store calls on its event loop) gets an error to log and retry instead of
    hanging. Not for migrations, whose index builds may run longer.
    """
    if sync not in _SYNCHRONOUS:
        raise ValueError(f"sync must be one of {sorted(_SYNCHRONOUS)}, not {sync!r}")
    parsed = make_url(url)
    # JSON columns go through orjson: ingest writes one JSON value per event.
    json_args: dict[str, Any] = {
        "json_serializer": _json_dumps,
        "json_deserializer": orjson.loads,
        # Statement parameters are patient messages: keep them out of error texts and logs.
        "hide_parameters": True,
    }
    if parsed.get_backend_name() != "sqlite":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        connect_args: dict[str, Any] = {}
        if statement_timeout is not None:
            # Added to the URL's own options (a search_path, say): these replace them.
            given = parsed.query.get("options", ())
            options = [given] if isinstance(given, str) else list(given)
            options.append(f"-c statement_timeout={round(statement_timeout * 1000)}")
            connect_args = {"options": " ".join(options), **_KEEPALIVES}
        return create_engine(
            parsed,
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_pre_ping=True,
            connect_args=connect_args,
            **json_args,
        )
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        parsed, connect_args={"timeout": 30, "check_same_thread": False}, **json_args
    )
    event.listen(engine, "connect", _sqlite_connect(_SYNCHRONOUS[sync]))
    event.listen(engine, "begin", _sqlite_begin)
    return engine


def _sqlite_connect(synchronous: str) -> Callable[[sqlite3.Connection, Any], None]:
    def connect(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
        # Let SQLAlchemy's "begin" hook own transactions instead of the driver's own.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return connect


def _sqlite_begin(connection: Any) -> None:
    if connection.get_execution_options().get(READ_ONLY):
        connection.exec_driver_sql("BEGIN")
    else:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", "hub.store:migrations")
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision``; safe to run on every start."""
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
