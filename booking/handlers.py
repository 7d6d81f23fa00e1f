"""Reactions of the booking service to payment facts."""

from __future__ import annotations

import logging

from sqlalchemy import bindparam, select, update

from booking.domain import BookingStatus, on_payment
from booking.tables import bookings
from choreo.booking.v1 import events_pb2 as booking_events
from choreo.clock import to_timestamp
from choreo.db import now_us
from choreo.errors import PermanentError
from choreo.handler import HandlerContext, Route
from choreo.payment.v1 import events_pb2 as payment_events

log = logging.getLogger(__name__)

#: The durable consumer of payment facts; replicas share it.
DURABLE = "booking"


# Built once: constructing a statement per event (and its cache key) costs more than running it.
#: PENDING -> an outcome; shared with the rebuild by replay (``booking.recovery``).
SETTLE = (
    update(bookings)
    .where(bookings.c.booking_id == bindparam("b_id"), bookings.c.status == BookingStatus.PENDING.value)
    .values(
        status=bindparam("b_status"),
        payment_id=bindparam("b_payment_id"),
        cancellation_reason=bindparam("b_reason"),
        updated_at_us=bindparam("b_now"),
    )
)
_STATUS_OF = select(bookings.c.status).where(bookings.c.booking_id == bindparam("b_id"))


class UnknownBookingError(PermanentError, LookupError):
    """A payment fact names a booking this service never created: no retry can change that."""


async def on_payment_succeeded(event: payment_events.PaymentSucceeded, ctx: HandlerContext) -> None:
    """CONFIRMED, and ``BookingConfirmed``."""
    await _settle(ctx, event.booking_id, succeeded=True, payment_id=event.payment_id, reason="")


async def on_payment_failed(event: payment_events.PaymentFailed, ctx: HandlerContext) -> None:
    """CANCELLED with the reason, and the compensating ``BookingCancelled``."""
    await _settle(ctx, event.booking_id, succeeded=False, payment_id=event.payment_id, reason=event.reason)


async def _settle(
    ctx: HandlerContext, booking_id: str, *, succeeded: bool, payment_id: str, reason: str
) -> None:
    # Only a PENDING booking moves (booking.domain.on_payment); the guard is in the UPDATE itself,
    # so the common case costs one statement.
    status = on_payment(BookingStatus.PENDING, succeeded)
    assert status is not None
    now = now_us()
    moved = await ctx.conn.execute(
        SETTLE,
        {
            "b_id": booking_id,
            "b_status": status.value,
            "b_payment_id": payment_id,
            "b_reason": reason,
            "b_now": now,
        },
    )
    if moved.rowcount == 0:
        current = (await ctx.conn.execute(_STATUS_OF, {"b_id": booking_id})).scalar_one_or_none()
        if current is None:
            raise UnknownBookingError(f"no booking {booking_id!r}")
        log.info("booking %s is already %s; payment outcome ignored", booking_id, current)
        return
    if status is BookingStatus.CONFIRMED:
        ctx.emit(
            booking_events.BookingConfirmed(
                booking_id=booking_id, payment_id=payment_id, confirmed_at=to_timestamp(now)
            )
        )
    else:
        ctx.emit(
            booking_events.BookingCancelled(
                booking_id=booking_id, reason=reason, cancelled_at=to_timestamp(now), payment_id=payment_id
            )
        )
    log.debug("booking %s %s", booking_id, status.value, extra={"booking_id": booking_id})


ROUTES = [
    Route(payment_events.PaymentSucceeded, on_payment_succeeded),
    Route(payment_events.PaymentFailed, on_payment_failed),
]
