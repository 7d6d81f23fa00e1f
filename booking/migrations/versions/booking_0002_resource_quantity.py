"""bookings.resource_id and bookings.quantity: the resource a booking reserves (inventory saga).

Existing bookings reserved nothing: '' and 0, which is what the server defaults give them,
so the previous release (which does not write these columns) keeps working on this schema.

Revision ID: booking_0002
Revises: booking_0001
Create Date: 2026-12-01 21:50:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "booking_0002"
down_revision: str | Sequence[str] | None = "booking_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("bookings", schema=None) as batch_op:
        batch_op.add_column(sa.Column("resource_id", sa.String(length=64), server_default="", nullable=False))
        batch_op.add_column(sa.Column("quantity", sa.Integer(), server_default="0", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("bookings", schema=None) as batch_op:
        batch_op.drop_column("quantity")
        batch_op.drop_column("resource_id")
