"""The hub's tables (SQLAlchemy Core). Times are UTC epoch seconds (float): one format
that sorts, compares and indexes the same on SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    text,
)

__all__ = [
    "OPEN_ROWS",
    "OPEN_STATUS",
    "attempts",
    "audit_log",
    "deliveries",
    "events",
    "inbound_messages",
    "metadata",
]

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# BIGINT on PostgreSQL, INTEGER PRIMARY KEY (rowid) on SQLite: both autoincrement.
_BigId = BigInteger().with_variant(Integer(), "sqlite")

# One row per body received, accepted or not: the raw bytes are kept exactly.
inbound_messages = Table(
    "inbound_messages",
    metadata,
    Column("id", String(26), primary_key=True),
    Column("received_at", Float, nullable=False, index=True),
    Column("channel", String(32), nullable=False),  # http, mllp, fhir
    Column("source", String(64)),  # the sending system, when known
    Column("content_type", String(128)),
    Column("raw", LargeBinary, nullable=False),
    Column("status", String(16), nullable=False),  # accepted | rejected
    Column("error", JSON),  # [{path, reason, type}] when rejected
    Column("event_count", Integer, nullable=False, default=0),
    # The first event's incident. Not indexed: the browser finds an incident's messages
    # through the events' incident index (see Store.list_messages and migration 0004).
    Column("incident_id", String(64)),
    Column("correlation_id", String(64)),
)

# One row per canonical event accepted; the event id is the idempotency key.
events = Table(
    "events",
    metadata,
    Column("event_id", String(64), primary_key=True),
    Column("inbound_id", String(26), ForeignKey("inbound_messages.id"), nullable=False),
    Column("type", String(32), nullable=False),
    Column("incident_id", String(64), nullable=False),
    Column("patient_ref", String(64)),
    Column("correlation_id", String(64)),
    Column("source", String(64), nullable=False),
    Column("occurred_at", Float, nullable=False),
    Column("received_at", Float, nullable=False),
    Column("body", JSON, nullable=False),  # canonical JSON of the event
    Column("body_sha256", String(64), nullable=False),
    Index("ix_events_incident_received", "incident_id", "received_at"),
    Index("ix_events_inbound_id", "inbound_id"),
)


# The partial indexes' WHERE, and every query term that must use them (SQLite uses a
# partial index only for a term written as the index's WHERE): ``OPEN_ROWS`` in
# SQLAlchemy statements, ``OPEN_STATUS`` (after a table alias and a dot) in raw SQL.
OPEN_STATUS = "status IN ('pending', 'in_flight')"
OPEN_ROWS = text(OPEN_STATUS)

# The outbox. id order is ingest order: FIFO per (destination, ordering_key) follows it.
deliveries = Table(
    "deliveries",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("message_id", String(20), nullable=False, unique=True),
    Column("event_id", String(64), ForeignKey("events.event_id"), nullable=False),
    Column("inbound_id", String(26), nullable=False),
    Column("incident_id", String(64), nullable=False),
    Column("correlation_id", String(64)),
    Column("event_type", String(32), nullable=False),
    Column("route", String(64), nullable=False),
    Column("mapping", String(64), nullable=False),
    Column("destination", String(64), nullable=False),
    Column("ordering_key", String(128), nullable=False),
    Column("status", String(16), nullable=False),  # pending | in_flight | delivered | dead
    Column("attempts", Integer, nullable=False, default=0),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("next_attempt_at", Float, nullable=False),
    Column("lease_until", Float),
    Column("claimed_by", String(64)),
    Column("delivered_at", Float),
    Column("last_error", Text),
    Column("payload", LargeBinary),  # mapped once, then the same bytes on every retry
    Column("content_type", String(128)),
    # The claim reads only open rows. These partial indexes hold just those, so a claim
    # costs the same however much delivered history the table keeps (see store._CLAIM).
    Index(
        "ix_deliveries_open",
        "destination",
        "id",
        sqlite_where=OPEN_ROWS,
        postgresql_where=OPEN_ROWS,
    ),
    Index(
        "ix_deliveries_open_key",
        "destination",
        "ordering_key",
        "id",
        sqlite_where=OPEN_ROWS,
        postgresql_where=OPEN_ROWS,
    ),
    # A message's deliveries (browser), and a replayed event's answer (with event_id).
    Index("ix_deliveries_inbound_id", "inbound_id"),
)

# Every try of a delivery with what the partner answered.
attempts = Table(
    "attempts",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("delivery_id", _BigId, ForeignKey("deliveries.id"), nullable=False, index=True),
    Column("number", Integer, nullable=False),
    Column("worker", String(64)),
    Column("started_at", Float, nullable=False),
    Column("latency_ms", Float, nullable=False),
    Column("outcome", String(16), nullable=False),  # delivered | transient | permanent
    Column("status", String(64)),
    Column("response", Text),
    Column("error_class", String(64)),
    Column("error", Text),
)

# Who read or changed what: reads of patient data and operator actions.
audit_log = Table(
    "audit_log",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("at", Float, nullable=False, index=True),
    Column("actor", String(64), nullable=False),
    Column("action", String(64), nullable=False),
    Column("subject", String(128)),
    Column("details", JSON),
)
