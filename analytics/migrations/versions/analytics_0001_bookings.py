"""The analytics_bookings table: what the booking facts say about each booking.

Revision ID: analytics_0001
Revises:
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "analytics_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("analytics",)
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "analytics_bookings",
        sa.Column("booking_id", sa.String(64), primary_key=True),
        sa.Column("created_at_us", sa.BigInteger(), nullable=True),
        sa.Column("amount_cents", sa.BigInteger(), nullable=True),
        sa.Column("currency", sa.String(3), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=True),
        sa.Column("cancellation_reason", sa.String(128), nullable=False),
        sa.Column("settled_at_us", sa.BigInteger(), nullable=True),
    )
    op.create_index("ix_analytics_bookings_created_at_us", "analytics_bookings", ["created_at_us"])


def downgrade() -> None:
    op.drop_index("ix_analytics_bookings_created_at_us", table_name="analytics_bookings")
    op.drop_table("analytics_bookings")
