"""The booking state machine, free of I/O so it can be tested on its own.

- PENDING -> CONFIRMED when the payment succeeded;
- PENDING -> CANCELLED when the payment failed (its reason), when inventory had no
  units left (``sold_out``) or when the payment did not answer in time (``payment_timeout``);
- PENDING or CONFIRMED -> CANCELLED when its user cancels it (``cancelled_by_user``):
  payment refunds a captured payment, inventory releases the units.

CANCELLED is terminal; CONFIRMED is terminal for every payment outcome (only a
user's cancel moves it). A late or repeated fact is a no-op, which is what makes
the handlers safe to run twice. Each move is one guarded UPDATE (its status IN
the states it may move from): ``booking.handlers.SETTLE`` moves a booking only
while its status is ``SETTLES_FROM``, to ``on_payment``'s status; a user's cancel
moves it from ``USER_CANCELS_FROM``.
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
        """Whether no payment outcome (nor the timeout, nor inventory) moves a booking in this status."""
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


#: The statuses a user's cancel moves a booking from (to CANCELLED, ``CANCELLED_BY_USER``).
USER_CANCELS_FROM = (BookingStatus.PENDING, BookingStatus.CONFIRMED)

#: Cancellation reasons booking itself decides (the payment's failure reasons come from payment).
CANCELLED_BY_USER = "cancelled_by_user"
PAYMENT_TIMEOUT = "payment_timeout"
SOLD_OUT = "sold_out"
#: Cancellations for another reason than the payment's own failure: a payment outcome that
#: arrives afterwards is late (payment refunds it on ``BookingCancelled``), not a contradiction.
CANCELLED_BEFORE_PAYMENT_SETTLED = frozenset({CANCELLED_BY_USER, PAYMENT_TIMEOUT, SOLD_OUT})


def effective_quantity(resource_id: str, quantity: int) -> int:
    """The units a booking reserves: a request's 0 is 1 with a resource; none without one."""
    if not resource_id:
        return 0
    return quantity or 1


def on_payment(succeeded: bool) -> BookingStatus:
    """The status a payment outcome moves a ``SETTLES_FROM`` booking to."""
    return BookingStatus.CONFIRMED if succeeded else BookingStatus.CANCELLED


def request_fingerprint(
    amount_cents: int,
    currency: str,
    payment_token: str,
    salt: str = "",
    email: str = "",
    resource_id: str = "",
    quantity: int = 0,
) -> str:
    """What a create request asks for; a key reused with another fingerprint is refused.

    It travels in ``BookingCreated`` (so a rebuild by replay restores it without the
    token, which only payment can read), salted with the booking id so that a
    reader of the fact cannot test guesses of a token against a table made once.
    Bookings made before the salt have an unsalted fingerprint (``salt=""``). The email
    counts only when given, and so do the resource and its quantity (the effective one:
    a request's 0 and 1 are the same request), so a request without them has the
    fingerprint it always had.
    """
    text = f"{amount_cents}|{currency}|{payment_token}"
    if email:
        text = f"{text}|{email}"
    if resource_id:
        text = f"{text}|r:{resource_id}|{effective_quantity(resource_id, quantity)}"
    if salt:
        text = f"{salt}|{text}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def same_request(
    stored: str,
    booking_id: str,
    amount_cents: int,
    currency: str,
    payment_token: str,
    email: str = "",
    resource_id: str = "",
    quantity: int = 0,
) -> bool:
    """Whether a stored fingerprint (salted, or unsalted from an older release) is this request's."""
    return stored in (
        request_fingerprint(amount_cents, currency, payment_token, booking_id, email, resource_id, quantity),
        request_fingerprint(amount_cents, currency, payment_token, "", email, resource_id, quantity),
    )
