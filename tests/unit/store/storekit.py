"""Builders for the records the store takes, and read-back helpers for its tables.

Imported by the store tests as ``storekit`` (pytest puts this folder on sys.path).
"""

from __future__ import annotations

import hashlib
import itertools
import time
from collections.abc import Sequence
from typing import Any

import orjson
from sqlalchemy import func, select

from hub.ids import new_id
from hub.store.records import (
    DeliveryStatus,
    Finished,
    IngestJob,
    NewDelivery,
    NewEvent,
)
from hub.store.store import Store
from hub.store.tables import attempts, audit_log, deliveries, events, inbound_messages


class Records:
    """Makes events and jobs with distinct, increasing receive times in the recent past."""

    def __init__(self) -> None:
        self.clock = time.time() - 3600
        self._inbound = itertools.count(1)

    def tick(self) -> float:
        self.clock += 0.5
        return self.clock

    def event(
        self,
        event_id: str,
        *,
        incident: str = "INC-1",
        key: str | None = None,
        destinations: Sequence[str] = ("his",),
        version: int = 1,
        occurred_at: float | None = None,
    ) -> NewEvent:
        body = {
            "event_id": event_id,
            "type": "incident.cancelled",
            "incident_id": incident,
            "source": "dispatch",
            "data": {"reason": "test", "version": version},
        }
        digest = hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()
        return NewEvent(
            event_id=event_id,
            type="incident.cancelled",
            incident_id=incident,
            patient_ref=None,
            correlation_id=f"corr-{incident}",
            source="dispatch",
            occurred_at=self.clock if occurred_at is None else occurred_at,
            body=body,
            body_sha256=digest,
            deliveries=tuple(
                NewDelivery(
                    message_id=new_id(),
                    route=f"to-{dest}",
                    mapping="canonical-json",
                    destination=dest,
                    ordering_key=key or f"incident:{incident}",
                )
                for dest in destinations
            ),
        )

    def job(self, *new_events: NewEvent, received_at: float | None = None) -> IngestJob:
        raw = orjson.dumps([e.body for e in new_events])
        return IngestJob(
            inbound_id=f"IN{next(self._inbound):06d}{new_id()[:10]}",
            received_at=self.tick() if received_at is None else received_at,
            channel="http",
            source="dispatch",
            content_type="application/json",
            raw=raw,
            events=tuple(new_events),
        )


def finished(
    delivery_id: int,
    worker: str,
    new_status: DeliveryStatus,
    *,
    number: int = 1,
    outcome: str | None = None,
    next_attempt_at: float | None = None,
    error: str | None = None,
    payload: bytes | None = None,
) -> Finished:
    now = time.time()
    default_outcome = {
        DeliveryStatus.DELIVERED: "delivered",
        DeliveryStatus.DEAD: "permanent",
        DeliveryStatus.PENDING: "transient",
    }[new_status]
    return Finished(
        delivery_id=delivery_id,
        number=number,
        worker=worker,
        started_at=now,
        latency_ms=12.5,
        outcome=outcome or default_outcome,
        new_status=new_status,
        next_attempt_at=now if next_attempt_at is None else next_attempt_at,
        status="HTTP 200" if new_status is DeliveryStatus.DELIVERED else "HTTP 503",
        response='{"ok":true}',
        error_class=None if new_status is DeliveryStatus.DELIVERED else "http_5xx",
        error=error,
        payload=payload,
        content_type="application/json" if payload is not None else None,
    )


def counts(store: Store) -> dict[str, int]:
    with store.engine.connect() as conn:
        return {
            table.name: int(conn.execute(select(func.count()).select_from(table)).scalar_one())
            for table in (inbound_messages, events, deliveries, attempts, audit_log)
        }


def delivery_rows(store: Store) -> list[dict[str, Any]]:
    with store.engine.connect() as conn:
        rows = conn.execute(select(deliveries).order_by(deliveries.c.id))
        return [dict(r._mapping) for r in rows]


def audit_rows(store: Store) -> list[dict[str, Any]]:
    with store.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(select(audit_log).order_by(audit_log.c.id))]


def attempt_rows(store: Store, delivery_id: int) -> list[dict[str, Any]]:
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(attempts).where(attempts.c.delivery_id == delivery_id).order_by(attempts.c.id)
        )
        return [dict(r._mapping) for r in rows]
