"""The booking state machine, free of I/O so it can be tested on its own.

PENDING -> CONFIRMED when the payment succeeded; PENDING -> CANCELLED when it
failed. Terminal states never change: a late or repeated payment fact is a
no-op, which is what makes the handlers safe to run twice. The handlers apply
this in one guarded UPDATE (``booking.handlers.SETTLE``): it moves a booking
only while its status is ``SETTLES_FROM``, to ``on_payment``'s status.
"""

from __future__ import annotations

import hashlib
from enum import StrEnum

from choreo.booking.v1 import commands_pb2


class BookingStatus(StrEnum):
    PENDING = "PENDING"
    CONFIRMED = "CONFIRMED"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        """Whether no payment outcome moves a booking in this status any more."""
        return self is not SETTLES_FROM

    def to_proto(self) -> commands_pb2.BookingState.ValueType:
        return _TO_PROTO[self]


_TO_PROTO = {
    BookingStatus.PENDING: commands_pb2.BOOKING_STATE_PENDING,
    BookingStatus.CONFIRMED: commands_pb2.BOOKING_STATE_CONFIRMED,
    BookingStatus.CANCELLED: commands_pb2.BOOKING_STATE_CANCELLED,
}


#: The only status a payment outcome moves a booking from (the guard of the settling UPDATE).
SETTLES_FROM = BookingStatus.PENDING


def on_payment(succeeded: bool) -> BookingStatus:
    """The status a payment outcome moves a ``SETTLES_FROM`` booking to."""
    return BookingStatus.CONFIRMED if succeeded else BookingStatus.CANCELLED


def request_fingerprint(
    amount_cents: int, currency: str, payment_token: str, salt: str = "", email: str = ""
) -> str:
    """What a create request asks for; a key reused with another fingerprint is refused.

    It travels in ``BookingCreated`` (so a rebuild by replay restores it without the
    token, which only payment can read), salted with the booking id so that a
    reader of the fact cannot test guesses of a token against a table made once.
    Bookings made before the salt have an unsalted fingerprint (``salt=""``). The email
    counts only when given, so a request without one has the fingerprint it always had.
    """
    text = f"{amount_cents}|{currency}|{payment_token}"
    if email:
        text = f"{text}|{email}"
    if salt:
        text = f"{salt}|{text}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def same_request(
    stored: str, booking_id: str, amount_cents: int, currency: str, payment_token: str, email: str = ""
) -> bool:
    """Whether a stored fingerprint (salted, or unsalted from an older release) is this request's."""
    return stored in (
        request_fingerprint(amount_cents, currency, payment_token, salt=booking_id, email=email),
        request_fingerprint(amount_cents, currency, payment_token, email=email),
    )
