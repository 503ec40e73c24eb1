"""Partial indexes over open deliveries, so claiming stays cheap as history grows.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_OPEN_ROWS = "status IN ('pending', 'in_flight')"


def upgrade() -> None:
    where = sa.text(_OPEN_ROWS)
    op.create_index(
        "ix_deliveries_open",
        "deliveries",
        ["destination", "id"],
        sqlite_where=where,
        postgresql_where=where,
    )
    op.create_index(
        "ix_deliveries_open_key",
        "deliveries",
        ["destination", "ordering_key", "id"],
        sqlite_where=where,
        postgresql_where=where,
    )


def downgrade() -> None:
    op.drop_index("ix_deliveries_open_key", table_name="deliveries")
    op.drop_index("ix_deliveries_open", table_name="deliveries")
