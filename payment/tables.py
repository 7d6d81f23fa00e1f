"""The payment service's own tables."""

from __future__ import annotations

from sqlmodel import Field, SQLModel

from choreo.db import big_int


class PaymentRow(SQLModel, table=True):
    """The outcome of charging one booking (at most one per booking)."""

    __tablename__ = "payments"

    booking_id: str = Field(primary_key=True, max_length=64)
    payment_id: str = Field(unique=True, max_length=64)
    amount_cents: int = big_int()
    currency: str = Field(max_length=3)
    succeeded: bool
    failure_reason: str = Field(default="", max_length=64)
    provider_charge_id: str = Field(max_length=64)
    created_at_us: int = big_int()


payments = PaymentRow.__table__  # type: ignore[attr-defined]
