"""Reactions of the booking service to payment facts.

A payment fact settles a booking only if it agrees with it (``booking.payment_checks``):
published by payment, for an existing booking of the same workflow, with the
booked amount and currency. The common case costs one statement: the agreement
is part of the guarded UPDATE, and only an UPDATE that moved nothing looks the
booking up to say why (a repeat, a late outcome after a cancellation, a mismatch
or a contradiction). A mismatch or a contradiction of a terminal state is
dead-lettered at once (``PermanentError``), never applied: in particular a
``PaymentSucceeded`` for a booking cancelled because its payment failed (or a
``PaymentFailed`` for a CONFIRMED one) leaves the booking as it is and waits in
the DLQ for an operator. An outcome that arrives after booking cancelled for its
own reasons (the user, the timeout, sold out) is late, not contradictory: payment
saw the ``BookingCancelled`` and refunds what it took.

A cancellation (``BookingCancelled``) names the booking's resource, so that
inventory releases what it reserved.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import bindparam, select, update

from booking.domain import SETTLES_FROM, BookingStatus, on_payment
from booking.payment_checks import PaymentOutcome, UnknownBookingError, check_against, check_source
from booking.tables import bookings
from choreo.booking.v1 import events_pb2 as booking_events
from choreo.clock import to_timestamp
from choreo.db import now_us
from choreo.handler import HandlerContext, Route
from choreo.payment.v1 import events_pb2 as payment_events

__all__ = ["DURABLE", "ROUTES", "SETTLE", "UnknownBookingError"]

log = logging.getLogger(__name__)

#: The durable consumer of payment facts; replicas share it.
DURABLE = "booking"


# Built once: constructing a statement per event (and its cache key) costs more than running it.
#: ``SETTLES_FROM`` (PENDING) -> ``on_payment``'s status, the state machine of ``booking.domain``; a
#: terminal booking never moves. Shared with the rebuild by replay (``booking.recovery``).
SETTLE = (
    update(bookings)
    .where(bookings.c.booking_id == bindparam("b_id"), bookings.c.status == SETTLES_FROM.value)
    .values(
        status=bindparam("b_status"),
        payment_id=bindparam("b_payment_id"),
        cancellation_reason=bindparam("b_reason"),
        updated_at_us=bindparam("b_now"),
    )
)
#: ``SETTLE`` for a payment fact that agrees with the booking (``booking.payment_checks``).
_SETTLE_MATCHING = SETTLE.where(
    bookings.c.amount_cents == bindparam("b_amount"),
    bookings.c.currency == bindparam("b_currency"),
    bookings.c.correlation_id == bindparam("b_correlation"),
)
_SETTLE_MATCHING_RETURNING = _SETTLE_MATCHING.returning(bookings.c.resource_id)
_BOOKING = select(
    bookings.c.status,
    bookings.c.amount_cents,
    bookings.c.currency,
    bookings.c.correlation_id,
    bookings.c.payment_id,
    bookings.c.cancellation_reason,
).where(bookings.c.booking_id == bindparam("b_id"))


async def on_payment_succeeded(event: payment_events.PaymentSucceeded, ctx: HandlerContext) -> None:
    """CONFIRMED, and ``BookingConfirmed``; a fact that disagrees with the booking goes to the DLQ."""
    await _settle(ctx, PaymentOutcome(event, ctx.envelope), reason="")


async def on_payment_failed(event: payment_events.PaymentFailed, ctx: HandlerContext) -> None:
    """CANCELLED with the reason, and the compensating ``BookingCancelled``; a mismatch goes to the DLQ."""
    await _settle(ctx, PaymentOutcome(event, ctx.envelope), reason=event.reason)


async def _settle(ctx: HandlerContext, outcome: PaymentOutcome, *, reason: str) -> None:
    check_source(outcome)
    fact = outcome.fact
    booking_id = fact.booking_id
    # Only a SETTLES_FROM (PENDING) booking moves: the guard is in the UPDATE itself.
    status = on_payment(outcome.succeeded)
    now = now_us()
    moved = await ctx.conn.execute(
        # A cancellation names the booking's resource (inventory releases it): the UPDATE returns it.
        _SETTLE_MATCHING if status is BookingStatus.CONFIRMED else _SETTLE_MATCHING_RETURNING,
        {
            "b_id": booking_id,
            "b_status": status.value,
            "b_payment_id": fact.payment_id,
            "b_reason": reason,
            "b_now": now,
            "b_amount": fact.amount_cents,
            "b_currency": fact.currency,
            "b_correlation": ctx.envelope.correlation_id,
        },
    )
    resource_id = ""
    if status is BookingStatus.CANCELLED:
        returned = moved.one_or_none()
        settled = returned is not None
        resource_id = returned.resource_id if returned is not None else ""
    else:
        settled = moved.rowcount == 1
    if not settled:
        booking = (await ctx.conn.execute(_BOOKING, {"b_id": booking_id})).mappings().one_or_none()
        check_against(outcome, booking)  # raises unless the fact is a repeat, or late after a cancel
        return
    if status is BookingStatus.CONFIRMED:
        ctx.emit(
            booking_events.BookingConfirmed(
                booking_id=booking_id, payment_id=fact.payment_id, confirmed_at=to_timestamp(now)
            )
        )
    else:
        ctx.emit(
            booking_events.BookingCancelled(
                booking_id=booking_id,
                reason=reason,
                cancelled_at=to_timestamp(now),
                payment_id=fact.payment_id,
                resource_id=resource_id,
            )
        )
    log.debug("booking %s %s", booking_id, status.value, extra={"booking_id": booking_id})


ROUTES: list[Route[Any]] = [
    Route(payment_events.PaymentSucceeded, on_payment_succeeded, emits=(booking_events.BookingConfirmed,)),
    Route(payment_events.PaymentFailed, on_payment_failed, emits=(booking_events.BookingCancelled,)),
]
