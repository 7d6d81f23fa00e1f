"""Baseline: the outbox and inbox as ``create_all`` made them before migrations existed.

Revision ID: choreo_0001
Revises:
Create Date: 2025-01-01

A database made by that ``create_all`` (no ``alembic_version`` table) is adopted:
``choreo.schema`` compares its tables with ``define_tables`` and, when they
match, stamps this revision instead of running it.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "choreo_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("choreo",)
depends_on: str | Sequence[str] | None = None


def define_tables(metadata: sa.MetaData) -> None:
    """The tables as of this revision (frozen here: the models may change later)."""
    sa.Table(
        "outbox",
        metadata,
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("subject", sa.String(255), nullable=False),
        sa.Column("headers", sa.Text(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("created_at_us", sa.BigInteger(), nullable=False),
    )
    sa.Table(
        "inbox",
        metadata,
        sa.Column("consumer", sa.String(128), primary_key=True),
        sa.Column("event_id", sa.String(64), primary_key=True),
        sa.Column("stream_sequence", sa.BigInteger(), nullable=False),
        sa.Column("processed_at_us", sa.BigInteger(), nullable=False),
    )


def upgrade() -> None:
    metadata = sa.MetaData()
    define_tables(metadata)
    metadata.create_all(op.get_bind())


def downgrade() -> None:
    op.drop_table("inbox")
    op.drop_table("outbox")
