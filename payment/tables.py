"""The payment service's own tables."""

from __future__ import annotations

from sqlalchemy import Column, LargeBinary
from sqlmodel import Field, SQLModel

from choreo.db import big_int


class PaymentRow(SQLModel, table=True):
    """The outcome of charging one booking (at most one per booking), and its refund if it had one.

    ``refund_id`` is empty until the payment is refunded: recording a refund is an update
    guarded by ``refund_id = ''``, so one payment is refunded (and announced) at most once.
    """

    __tablename__ = "payments"

    booking_id: str = Field(primary_key=True, max_length=64)
    payment_id: str = Field(unique=True, max_length=64)
    amount_cents: int = big_int()
    currency: str = Field(max_length=3)
    succeeded: bool
    failure_reason: str = Field(default="", max_length=64)
    provider_charge_id: str = Field(max_length=64)
    created_at_us: int = big_int()
    refund_id: str = Field(default="", max_length=64)
    provider_refund_id: str = Field(default="", max_length=64)
    refund_reason: str = Field(default="", max_length=64)
    refunded_at_us: int = big_int(default=0)


class PaymentRequestRow(SQLModel, table=True):
    """A resource booking's charge, waiting for its ``InventoryReserved`` (at most one per booking).

    The token stays sealed (only this service's key opens it) and is cleared
    (``sealed_payment_token`` empty) once the booking is charged or cancelled: it is kept
    no longer than it may still be needed.
    """

    __tablename__ = "payment_requests"

    booking_id: str = Field(primary_key=True, max_length=64)
    resource_id: str = Field(max_length=64)
    quantity: int
    amount_cents: int = big_int()
    currency: str = Field(max_length=3)
    sealed_payment_token: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    #: ``BookingCreated.pay_by``: no charge is started at or after it (0: no limit).
    pay_by_us: int = big_int(default=0)
    created_at_us: int = big_int()


class CancellationRow(SQLModel, table=True):
    """A booking payment saw cancelled: it is never charged afterwards, and refunded if it was."""

    __tablename__ = "cancellations"

    booking_id: str = Field(primary_key=True, max_length=64)
    reason: str = Field(max_length=64)
    cancelled_at_us: int = big_int()


payments = PaymentRow.__table__  # type: ignore[attr-defined]
payment_requests = PaymentRequestRow.__table__  # type: ignore[attr-defined]
cancellations = CancellationRow.__table__  # type: ignore[attr-defined]
