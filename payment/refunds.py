"""Cancelled bookings: never charged afterwards, and a charge they had is refunded once.

``BookingCancelled`` (any reason) records the booking's cancellation, so that no
later fact charges it, and forgets the sealed token of its request. Its ``prepare``
asks the provider to refund the booking's charge, whatever payment has recorded:
the provider refunds a succeeded charge once and does nothing when there is none,
and a charge made concurrently (prepared, not yet recorded) must be refunded too.
Under the booking's lock the handler then records the refund of a succeeded,
unrefunded payment once (``PaymentRefunded`` with the cancellation's reason); a
payment recorded after the refund was asked for, when there was nothing to refund
yet, is ``TransientError``: the retry refunds it.
"""

from __future__ import annotations

import logging

from choreo.booking.v1 import events_pb2 as booking_events
from choreo.db import now_us
from choreo.errors import PermanentError, TransientError
from choreo.handler import HandlerContext
from payment.provider import RefundResult
from payment.records import CANCEL_ONCE, clear_token, lock_booking, record_refund

log = logging.getLogger(__name__)

#: The ``ce-source`` of the cancellations payment refunds on: the booking service's.
BOOKING_SOURCE = "booking"
#: The longest reason kept (the columns' size); reasons are short machine words.
MAX_REASON = 64


class ForeignCancellationError(PermanentError):
    """A ``BookingCancelled`` not published by booking: nothing is refunded on it."""


async def record_cancellation(event: booking_events.BookingCancelled, ctx: HandlerContext) -> None:
    """Records the cancellation once and the refund ``prepare`` made (``ctx.prepared``) once."""
    check_source(ctx.envelope.source, ctx.envelope.id)
    booking = await lock_booking(ctx.conn, event.booking_id)
    reason = booking.cancelled if booking.cancelled is not None else event.reason[:MAX_REASON]
    if booking.cancelled is None:
        await ctx.conn.execute(
            CANCEL_ONCE[ctx.conn.dialect.name],
            {"booking_id": event.booking_id, "reason": reason, "cancelled_at_us": now_us()},
        )
    await clear_token(ctx.conn, booking)
    refund: RefundResult = ctx.prepared
    payment = booking.payment
    if payment is None or not payment.succeeded or payment.refund_id:
        # Nothing captured, or refunded already. A refund of a charge not recorded yet is
        # recorded by that charge's retry, which finds this cancellation.
        return
    if not refund.refunded:
        raise TransientError(
            f"booking {event.booking_id} was charged while it was cancelled: the retry refunds"
        )
    await record_refund(ctx, event.booking_id, refund, reason)


def check_source(source: str, event_id: str) -> None:
    """Only booking cancels a booking (NATS permissions are the first guard, this the second)."""
    if source != BOOKING_SOURCE:
        raise ForeignCancellationError(
            f"BookingCancelled {event_id} comes from {source!r}, not {BOOKING_SOURCE!r}: nothing refunded"
        )
