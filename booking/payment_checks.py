"""Checking a payment fact against the booking it names, before it may settle it.

Anyone who can publish on ``payment.>`` could otherwise confirm a declined booking
or cancel a paid one. NATS permissions (only the payment service's user may
publish there) are the first guard; this module is the second: a payment fact
settles a booking only if it agrees with what the booking service itself
recorded. A fact that does not is refused for good (``PermanentError``): the
consumer copies it to the DLQ at once, and the log line names the booking, the
workflow's correlation id and the field that disagrees.

These checks stop a sloppy or mistaken fact (another booking's amount, another
workflow's outcome, a test publisher), not a determined forger: a publisher
allowed on ``payment.>`` can copy the right values and set any ``ce-source``
header. Against that, the NATS permission is the guard (and signing payment's
facts with its key would be the next step).

What must agree:

- ``ce-source``: the fact says it was published by the payment service (``PAYMENT_SOURCE``);
- the booking exists (``UnknownBookingError``);
- ``amount_cents`` and ``currency``: what was charged is what was booked;
- the correlation id: the fact belongs to the booking's workflow.

A booking in a terminal state is never moved again. What a fact that agrees
but finds it settled means:

- the same outcome from the same payment (a redelivered copy, e.g. after the inbox
  was pruned): a repeat, a no-op;
- any outcome for a booking cancelled before its payment settled, for booking's own
  reasons (``cancelled_by_user``, ``payment_timeout``, ``sold_out``; its payment_id is
  empty): late, a no-op logged at info. Payment saw the ``BookingCancelled`` too and
  refunds a charge it made (or never makes it); the booking stays CANCELLED;
- the booking's own successful payment again, for a booking its user cancelled after
  it was CONFIRMED (it keeps that payment_id): a repeat, a no-op (payment refunds it);
- anything else (``ContradictingPaymentError``) goes to the DLQ: a ``PaymentSucceeded``
  for a booking cancelled because its payment failed means money may have been taken
  for a booking the customer was told failed, which only an operator can settle (a
  refund, or a manual confirmation); a ``PaymentFailed`` for a CONFIRMED booking, or a
  second payment for a settled booking, is either forged or a bug upstream.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, NoReturn

from booking.domain import CANCELLED_BEFORE_PAYMENT_SETTLED, CANCELLED_BY_USER, BookingStatus
from choreo.envelope import Envelope
from choreo.errors import PermanentError
from choreo.payment.v1 import events_pb2 as payment_events

log = logging.getLogger(__name__)

#: ``ce-source`` of every genuine payment fact (the payment service's name).
PAYMENT_SOURCE = "payment"

PaymentFact = payment_events.PaymentSucceeded | payment_events.PaymentFailed


class UnknownBookingError(PermanentError, LookupError):
    """A fact (payment's, inventory's) names a booking this service never created: no retry helps."""


class FactMismatchError(PermanentError):
    """A fact of another service disagrees with its booking (or was not published by that service).

    Attributes:
        field: The fact's field that disagrees (``ce-source``, ``amount_cents``, ...).
        publisher: Whose facts the subclass refuses, for the log line.
    """

    publisher = "a service's"

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


class PaymentMismatchError(FactMismatchError):
    """A payment fact disagrees with its booking (or was not published by payment)."""

    publisher = "payment"


class ContradictingPaymentError(PermanentError):
    """A payment outcome for a booking already settled otherwise: an operator must decide."""


@dataclass(frozen=True, slots=True)
class PaymentOutcome:
    """What a payment fact says, with where it came from."""

    fact: PaymentFact
    envelope: Envelope

    @property
    def succeeded(self) -> bool:
        return isinstance(self.fact, payment_events.PaymentSucceeded)

    @property
    def description(self) -> str:
        e = self.envelope
        return (
            f"{type(self.fact).__name__} {self.fact.payment_id!r} for booking {self.fact.booking_id!r} "
            f"(correlation {e.correlation_id!r}, event {e.id!r})"
        )


def check_source(outcome: PaymentOutcome) -> None:
    """Refuses a payment fact whose ``ce-source`` is not the payment service."""
    if outcome.envelope.source != PAYMENT_SOURCE:
        _refuse(outcome, "ce-source", outcome.envelope.source, PAYMENT_SOURCE)


def check_against(outcome: PaymentOutcome, booking: Any) -> None:
    """Raises unless the fact may settle ``booking`` (a bookings row, or None when there is none).

    Returns normally for a fact that repeats the outcome the booking already has
    (nothing to do); the caller moves a PENDING booking only through its
    guarded UPDATE, so this is the slow path, run when that UPDATE moved nothing.
    """
    fact = outcome.fact
    if booking is None:
        raise UnknownBookingError(f"{outcome.description}: no such booking")
    for field, got, want in (
        ("amount_cents", fact.amount_cents, booking["amount_cents"]),
        ("currency", fact.currency, booking["currency"]),
        ("correlation_id", outcome.envelope.correlation_id, booking["correlation_id"]),
    ):
        if got != want:
            _refuse(outcome, field, got, want)
    status = BookingStatus(booking["status"])
    if not status.terminal:
        # Agrees in every field, yet the guarded UPDATE moved nothing: it changed meanwhile.
        raise RuntimeError(f"{outcome.description}: booking changed while it was settled; retrying")
    if _late_after_cancel(outcome, status, booking):
        log.info(
            "booking %s was already cancelled (%s); late %s ignored, payment refunds what it took",
            fact.booking_id,
            booking["cancellation_reason"],
            outcome.description,
            extra={"booking_id": fact.booking_id, "correlation_id": outcome.envelope.correlation_id},
        )
        return
    # A booking its user cancelled after it was CONFIRMED was not settled by a payment's failure.
    by_payment = booking["cancellation_reason"] not in CANCELLED_BEFORE_PAYMENT_SETTLED
    same_outcome = by_payment and (status is BookingStatus.CONFIRMED) == outcome.succeeded
    if same_outcome and fact.payment_id == booking["payment_id"]:
        log.info(
            "booking %s is already %s by %s; repeated payment fact ignored",
            fact.booking_id,
            status.value,
            fact.payment_id,
            extra={"booking_id": fact.booking_id, "correlation_id": outcome.envelope.correlation_id},
        )
        return
    message = (
        f"{outcome.description} contradicts the booking, which is {status.value}"
        f" (payment {booking['payment_id']!r})"
    )
    if outcome.succeeded and status is BookingStatus.CANCELLED:
        message += ": money may have been taken for a cancelled booking; refund it or settle it by hand"
    log.error(
        "%s; dead-lettering it, the booking stays %s",
        message,
        status.value,
        extra={"booking_id": fact.booking_id, "correlation_id": outcome.envelope.correlation_id},
    )
    raise ContradictingPaymentError(message)


def _late_after_cancel(outcome: PaymentOutcome, status: BookingStatus, booking: Any) -> bool:
    """Whether the fact merely comes after booking cancelled for its own reasons (not a contradiction)."""
    reason = booking["cancellation_reason"]
    if status is not BookingStatus.CANCELLED or reason not in CANCELLED_BEFORE_PAYMENT_SETTLED:
        return False
    if not booking["payment_id"]:
        return True  # cancelled while PENDING: any outcome of its payment comes late
    # Cancelled by its user after it was CONFIRMED: only its own payment's success repeats.
    return (
        reason == CANCELLED_BY_USER and outcome.succeeded and outcome.fact.payment_id == booking["payment_id"]
    )


def _refuse(outcome: PaymentOutcome, field: str, got: object, want: object) -> NoReturn:
    refuse(
        PaymentMismatchError,
        outcome.description,
        field,
        got,
        want,
        booking_id=outcome.fact.booking_id,
        correlation_id=outcome.envelope.correlation_id,
    )


def refuse(
    error: type[FactMismatchError],
    what: str,
    field: str,
    got: object,
    want: object,
    *,
    booking_id: str,
    correlation_id: str,
) -> NoReturn:
    """Logs why ``what`` (a fact) disagrees with its booking in ``field``, then raises ``error``."""
    message = f"{what} does not match the booking: {field} is {got!r}, expected {want!r}"
    log.error(
        "refused %s fact: %s; dead-lettering it",
        error.publisher,
        message,
        extra={"booking_id": booking_id, "correlation_id": correlation_id, "field": field},
    )
    raise error(message, field)
