"""Counts of dead letters trimmed from the bounded Redis dead lists.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-10
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dead_letter_trims",
        sa.Column("channel", sa.String(128), nullable=False),
        sa.Column("subscriber", sa.String(128), nullable=False),
        sa.Column("trimmed", sa.BigInteger(), nullable=False),
        sa.Column("last_trimmed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("channel", "subscriber", name="pk_dead_letter_trims"),
    )


def downgrade() -> None:
    op.drop_table("dead_letter_trims")
