"""Baseline: the notification service's first tables.

Revision ID: notification_0001
Revises:
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "notification_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("notification",)
depends_on: str | Sequence[str] | None = None


def define_tables(metadata: sa.MetaData) -> None:
    """The tables as of this revision (frozen here: the models may change later)."""
    sa.Table(
        "notification_bookings",
        metadata,
        sa.Column("booking_id", sa.String(64), primary_key=True),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("created_at_us", sa.BigInteger(), nullable=False),
        sa.Column("received_handled", sa.Boolean(), nullable=False),
    )
    sa.Table(
        "notifications",
        metadata,
        sa.Column("fact_id", sa.String(64), primary_key=True),
        sa.Column("booking_id", sa.String(64), nullable=False, index=True),
        sa.Column("kind", sa.Integer(), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("recipient", sa.String(320), nullable=False),
        sa.Column("message_id", sa.String(200), nullable=False),
        sa.Column("detail", sa.String(500), nullable=False),
        sa.Column("correlation_id", sa.String(64), nullable=False),
        sa.Column("handled_at_us", sa.BigInteger(), nullable=False),
    )


def upgrade() -> None:
    metadata = sa.MetaData()
    define_tables(metadata)
    metadata.create_all(op.get_bind())


def downgrade() -> None:
    op.drop_table("notifications")
    op.drop_table("notification_bookings")
