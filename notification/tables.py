"""The notification service's own tables.

``notification_bookings`` keeps what ``BookingCreated`` says that the later facts of a
booking do not (its email, amount, user): ``BookingConfirmed`` and ``BookingCancelled``
are emailed about from it, without asking booking. ``notifications`` holds one row per
fact that called for an email: what became of it.
"""

from __future__ import annotations

from sqlmodel import Field, SQLModel

from choreo.db import big_int


class BookingRow(SQLModel, table=True):
    """A booking as its ``BookingCreated`` described it (one per booking)."""

    __tablename__ = "notification_bookings"

    booking_id: str = Field(primary_key=True, max_length=64)
    #: Where its emails go; empty when the user gave none.
    email: str = Field(default="", max_length=320)
    user_id: str = Field(default="", max_length=128)
    amount_cents: int = big_int()
    currency: str = Field(max_length=3)
    #: When the booking was created (the fact's time), microseconds since the epoch.
    created_at_us: int = big_int()
    #: Its "we received your booking" email is handled (sent, skipped or refused): the later
    #: emails wait for it, so the user reads them in order.
    received_handled: bool = False


class NotificationRow(SQLModel, table=True):
    """What became of the email one fact called for (one per fact)."""

    __tablename__ = "notifications"

    #: The ``ce-id`` of the fact that caused the email.
    fact_id: str = Field(primary_key=True, max_length=64)
    booking_id: str = Field(max_length=64, index=True)
    #: ``NotificationKind`` (received, confirmed, cancelled).
    kind: int
    #: ``NotificationStatus`` (sent, skipped, refused).
    status: int
    recipient: str = Field(default="", max_length=320)
    message_id: str = Field(max_length=200)
    detail: str = Field(default="", max_length=500)
    correlation_id: str = Field(default="", max_length=64)
    handled_at_us: int = big_int()


bookings = BookingRow.__table__  # type: ignore[attr-defined]
notifications = NotificationRow.__table__  # type: ignore[attr-defined]
