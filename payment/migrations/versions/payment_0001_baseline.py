"""Baseline: the payments table as ``create_all`` made it before migrations existed.

Revision ID: payment_0001
Revises:
Create Date: 2025-01-01

A database made by that ``create_all`` is adopted: its tables are compared with
``define_tables`` and, when they match, this revision is stamped, not run.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "payment_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("payment",)
depends_on: str | Sequence[str] | None = None


def define_tables(metadata: sa.MetaData) -> None:
    """The tables as of this revision (frozen here: the models may change later)."""
    sa.Table(
        "payments",
        metadata,
        sa.Column("booking_id", sa.String(64), primary_key=True),
        sa.Column("payment_id", sa.String(64), nullable=False, unique=True),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("succeeded", sa.Boolean(), nullable=False),
        sa.Column("failure_reason", sa.String(64), nullable=False),
        sa.Column("provider_charge_id", sa.String(64), nullable=False),
        sa.Column("created_at_us", sa.BigInteger(), nullable=False),
    )


def upgrade() -> None:
    metadata = sa.MetaData()
    define_tables(metadata)
    metadata.create_all(op.get_bind())


def downgrade() -> None:
    op.drop_table("payments")
