"""Delivery indexes by use: one for a message's deliveries, none that nothing reads.

Showing a message (``GET /v1/messages/{id}``, ``hub show``) read its deliveries by
``inbound_id`` with no index: a scan of every delivery ever made. Three indexes were
kept up to date on every ingest, claim or finish and read by no query: by incident, by
(destination, ordering key, id) (the claim's head test uses the partial index over open
rows) and by (status, next attempt) (the sweep and the queue figures read open rows
through the partial index too; a claim for every destination reads it whole). Measured
on SQLite, alternating: an ingest ~268 → ~249 µs of CPU, a claim ~175 → ~162 µs.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_deliveries_inbound_id", "deliveries", ["inbound_id"])
    op.drop_index("ix_deliveries_incident_id", table_name="deliveries")
    op.drop_index("ix_deliveries_key", table_name="deliveries")
    op.drop_index("ix_deliveries_status_next", table_name="deliveries")


def downgrade() -> None:
    op.create_index("ix_deliveries_status_next", "deliveries", ["status", "next_attempt_at"])
    op.create_index("ix_deliveries_key", "deliveries", ["destination", "ordering_key", "id"])
    op.create_index("ix_deliveries_incident_id", "deliveries", ["incident_id"])
    op.drop_index("ix_deliveries_inbound_id", table_name="deliveries")
