"""The booking service's own tables."""

from __future__ import annotations

from sqlalchemy import Index, String
from sqlmodel import Field, SQLModel

from choreo.db import big_int


class BookingRow(SQLModel, table=True):
    """A booking as the booking service owns it."""

    __tablename__ = "bookings"
    __table_args__ = (
        # A retried create with the same key is the same booking; NULL keys never collide.
        Index("ux_bookings_idempotency", "user_id", "idempotency_key", unique=True),
    )

    booking_id: str = Field(primary_key=True, max_length=64)
    user_id: str = Field(max_length=128)
    amount_cents: int = big_int()
    currency: str = Field(max_length=3)
    status: str = Field(max_length=16)
    correlation_id: str = Field(max_length=64)
    payment_id: str = Field(default="", max_length=64)
    cancellation_reason: str = Field(default="", max_length=128)
    idempotency_key: str | None = Field(default=None, sa_type=String(128))
    #: Fingerprint of the request, to refuse a key reused with other parameters.
    request_hash: str = Field(default="", max_length=64)
    #: The resource reserved for it (inventory), '' for none; ``quantity`` its units (0 without one).
    resource_id: str = Field(default="", max_length=64, sa_column_kwargs={"server_default": ""})
    quantity: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    created_at_us: int = big_int()
    updated_at_us: int = big_int()


bookings = BookingRow.__table__  # type: ignore[attr-defined]
