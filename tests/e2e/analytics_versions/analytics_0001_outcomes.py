"""The analytics service's first table (what `python -m choreo.migrate` writes for a new branch).

Revision ID: analytics_0001
Revises:
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
        "analytics_outcomes",
        sa.Column("booking_id", sa.String(64), primary_key=True),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("correlation_id", sa.String(64), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("analytics_outcomes")
