"""Reading a store's delivery rows directly, for tests and tooling.

The engine never needs these: it reads the queue through ``Store.claim`` and
``Store.queue_stats``. Tests use them to see what the engine did.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from hub.store.store import Store
from hub.store.tables import deliveries

__all__ = ["delivery_row", "status_counts"]


def delivery_row(store: Store, delivery_id: int) -> dict[str, Any] | None:
    """The delivery's row as a dict, or None."""
    with store.engine.connect() as conn:
        row = conn.execute(select(deliveries).where(deliveries.c.id == delivery_id)).first()
        return None if row is None else dict(row._mapping)


def status_counts(store: Store) -> dict[str, int]:
    """How many deliveries are in each status (absent statuses are left out)."""
    with store.engine.connect() as conn:
        rows = conn.execute(select(deliveries.c.status, func.count()).group_by(deliveries.c.status))
        return {status: int(count) for status, count in rows}
