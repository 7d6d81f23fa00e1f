"""The analytics service's own table: one row per booking, filled from its facts in any order.

A row may be made by any of its facts: a ``BookingConfirmed`` that arrives before its
``BookingCreated`` (after retries) makes a row without a creation time, which the
``BookingCreated`` fills in later. Such a row counts in no window until then.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, String
from sqlmodel import Field, SQLModel

#: What ``outcome`` holds once the booking is settled (NULL while it is pending).
CONFIRMED = "confirmed"
CANCELLED = "cancelled"


class BookingFactsRow(SQLModel, table=True):
    """What the booking facts say about one booking, times in microseconds since the epoch."""

    __tablename__ = "analytics_bookings"
    __table_args__ = (Index("ix_analytics_bookings_created_at_us", "created_at_us"),)

    booking_id: str = Field(primary_key=True, max_length=64)
    #: ``BookingCreated.created_at``; NULL until that fact arrives.
    created_at_us: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    amount_cents: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    currency: str | None = Field(default=None, sa_type=String(3))
    #: ``confirmed`` or ``cancelled``; NULL while pending.
    outcome: str | None = Field(default=None, sa_type=String(16))
    cancellation_reason: str = Field(default="", max_length=128)
    #: ``confirmed_at`` or ``cancelled_at``; NULL while pending.
    settled_at_us: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))


analytics_bookings = BookingFactsRow.__table__  # type: ignore[attr-defined]
