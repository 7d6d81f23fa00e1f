"""The audit service's first table (what `python -m choreo.migrate` writes for a new branch).

Revision ID: audit_0001
Revises:
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "audit_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("audit",)
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_outcomes",
        sa.Column("booking_id", sa.String(64), primary_key=True),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("correlation_id", sa.String(64), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("audit_outcomes")
