"""Booking's facts as booking publishes them, for the notification tests (booking itself is not run)."""

from __future__ import annotations

import time

from google.protobuf.message import Message

from choreo.booking.v1 import events_pb2 as booking_events
from choreo.clock import to_timestamp
from choreo.contract import fact_subject
from choreo.envelope import Envelope
from notification.messages import message_id_for

#: The Message-ID domain the tests configure.
DOMAIN = "mail.example.com"
MAIL_FROM = "Bookings <bookings@example.com>"


def now_us(ago_seconds: float = 0.0) -> int:
    return int((time.time() - ago_seconds) * 1_000_000)


def fact(message: Message, correlation: str) -> Envelope:
    return Envelope.wrap(
        message, source="booking", subject=fact_subject(type(message)), correlation_id=correlation
    )


def created(booking_id: str, email: str = "", *, ago_seconds: float = 0.0, amount: int = 2500) -> Envelope:
    return fact(
        booking_events.BookingCreated(
            booking_id=booking_id,
            user_id="u1",
            amount_cents=amount,
            currency="EUR",
            email=email,
            created_at=to_timestamp(now_us(ago_seconds)),
        ),
        f"wf-{booking_id}",
    )


def confirmed(booking_id: str, *, ago_seconds: float = 0.0) -> Envelope:
    return fact(
        booking_events.BookingConfirmed(
            booking_id=booking_id,
            payment_id=f"pay-{booking_id}",
            confirmed_at=to_timestamp(now_us(ago_seconds)),
        ),
        f"wf-{booking_id}",
    )


def cancelled(booking_id: str, reason: str = "card_declined", *, ago_seconds: float = 0.0) -> Envelope:
    return fact(
        booking_events.BookingCancelled(
            booking_id=booking_id, reason=reason, cancelled_at=to_timestamp(now_us(ago_seconds))
        ),
        f"wf-{booking_id}",
    )


def message_id(env: Envelope) -> str:
    """The Message-ID the email caused by ``env`` must carry."""
    return message_id_for(env.id, DOMAIN)
