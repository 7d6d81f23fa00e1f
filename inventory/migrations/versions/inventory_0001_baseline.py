"""Baseline: the inventory service's first tables.

Revision ID: inventory_0001
Revises:
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "inventory_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("inventory",)
depends_on: str | Sequence[str] | None = None


def define_tables(metadata: sa.MetaData) -> None:
    """The tables as of this revision (frozen here: the models may change later)."""
    sa.Table(
        "resources",
        metadata,
        sa.Column("resource_id", sa.String(64), primary_key=True),
        sa.Column("capacity", sa.BigInteger(), nullable=False),
        sa.Column("reserved", sa.BigInteger(), nullable=False),
        sa.Column("updated_at_us", sa.BigInteger(), nullable=False),
    )
    sa.Table(
        "reservations",
        metadata,
        sa.Column("booking_id", sa.String(64), primary_key=True),
        sa.Column("resource_id", sa.String(64), nullable=False, index=True),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(128), nullable=False),
        sa.Column("created_at_us", sa.BigInteger(), nullable=False),
        sa.Column("updated_at_us", sa.BigInteger(), nullable=False),
    )


def upgrade() -> None:
    metadata = sa.MetaData()
    define_tables(metadata)
    metadata.create_all(op.get_bind())


def downgrade() -> None:
    op.drop_table("reservations")
    op.drop_table("resources")
