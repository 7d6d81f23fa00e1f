"""Baseline: the bookings table as ``create_all`` made it before migrations existed.

Revision ID: booking_0001
Revises:
Create Date: 2025-01-01

A database made by that ``create_all`` is adopted: its tables are compared with
``define_tables`` and, when they match, this revision is stamped, not run.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "booking_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("booking",)
depends_on: str | Sequence[str] | None = None


def define_tables(metadata: sa.MetaData) -> None:
    """The tables as of this revision (frozen here: the models may change later)."""
    sa.Table(
        "bookings",
        metadata,
        sa.Column("booking_id", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("correlation_id", sa.String(64), nullable=False),
        sa.Column("payment_id", sa.String(64), nullable=False),
        sa.Column("cancellation_reason", sa.String(128), nullable=False),
        sa.Column("idempotency_key", sa.String(128), nullable=True),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("created_at_us", sa.BigInteger(), nullable=False),
        sa.Column("updated_at_us", sa.BigInteger(), nullable=False),
        sa.Index("ux_bookings_idempotency", "user_id", "idempotency_key", unique=True),
    )


def upgrade() -> None:
    metadata = sa.MetaData()
    define_tables(metadata)
    metadata.create_all(op.get_bind())


def downgrade() -> None:
    op.drop_table("bookings")
