"""The event log and idempotency keys.

Revision ID: 0001
Revises:
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

position_type = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("position", position_type, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("channel", sa.String(128), nullable=False),
        sa.Column("type", sa.String(200), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("aggregate_type", sa.String(128)),
        sa.Column("aggregate_id", sa.String(200)),
        sa.Column("aggregate_version", sa.BigInteger()),
        sa.Column("correlation_id", sa.String(200)),
        sa.Column("causation_id", sa.String(200)),
        sa.Column("producer", sa.String(200)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("dispatched", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.PrimaryKeyConstraint("position", name="pk_events"),
        sa.UniqueConstraint("id", name="uq_events_id"),
    )
    op.create_index(
        "uq_events_aggregate_version",
        "events",
        ["aggregate_type", "aggregate_id", "aggregate_version"],
        unique=True,
    )
    op.create_index("ix_events_channel_position", "events", ["channel", "position"])
    op.create_index("ix_events_dispatched_position", "events", ["dispatched", "position"])
    op.create_table(
        "idempotency_keys",
        sa.Column("producer", sa.String(200), nullable=False),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("positions", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("producer", "key", name="pk_idempotency_keys"),
    )


def downgrade() -> None:
    op.drop_table("idempotency_keys")
    op.drop_index("ix_events_dispatched_position", table_name="events")
    op.drop_index("ix_events_channel_position", table_name="events")
    op.drop_index("uq_events_aggregate_version", table_name="events")
    op.drop_table("events")
