"""Refunds of payments, charge requests of resource bookings, and the cancellations payment saw.

Revision ID: payment_0002
Revises: payment_0001
Create Date: 2026-12-01 22:00:00

Existing payments get an empty refund (never refunded); the new tables start empty.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "payment_0002"
down_revision: str | Sequence[str] | None = "payment_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("refund_id", sa.String(length=64), server_default="", nullable=False))
        batch_op.add_column(
            sa.Column("provider_refund_id", sa.String(length=64), server_default="", nullable=False)
        )
        batch_op.add_column(
            sa.Column("refund_reason", sa.String(length=64), server_default="", nullable=False)
        )
        batch_op.add_column(sa.Column("refunded_at_us", sa.BigInteger(), server_default="0", nullable=False))
    op.create_table(
        "payment_requests",
        sa.Column("booking_id", sa.String(length=64), nullable=False),
        sa.Column("resource_id", sa.String(length=64), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("sealed_payment_token", sa.LargeBinary(), nullable=False),
        sa.Column("pay_by_us", sa.BigInteger(), nullable=False),
        sa.Column("created_at_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("booking_id"),
    )
    op.create_table(
        "cancellations",
        sa.Column("booking_id", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=False),
        sa.Column("cancelled_at_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("booking_id"),
    )


def downgrade() -> None:
    op.drop_table("cancellations")
    op.drop_table("payment_requests")
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.drop_column("refunded_at_us")
        batch_op.drop_column("refund_reason")
        batch_op.drop_column("provider_refund_id")
        batch_op.drop_column("refund_id")
