"""How the payment service rebuilds its database from its own stream (``choreo.recovery``).

Each ``PaymentSucceeded`` or ``PaymentFailed`` gives back the payment row, and each
``PaymentRefunded`` its refund and the booking's cancellation; the fact each reacted
to goes back into the inbox of the ``payment`` consumer: after the rebuild, a
redelivered ``BookingCreated`` or ``BookingCancelled`` is a duplicate, not a charge
or a refund (and any later fact about a paid or refunded booking finds its row).

What no payment fact announces cannot come back: the payment requests of resource
bookings not charged yet, and the cancellations of bookings that were never charged.
"""

from __future__ import annotations

from choreo.clock import from_timestamp
from choreo.payment.v1 import events_pb2 as payment_events
from choreo.recovery import Recovery, Restore, RestoreContext
from payment.handlers import DURABLE
from payment.records import CANCEL_ONCE, RECORD_ONCE, RECORD_REFUND
from payment.settings import PaymentSettings
from payment.tables import cancellations, payment_requests, payments
from payment.topology import STREAM

#: The settings ``choreo recover payment`` reads.
SETTINGS = PaymentSettings


async def succeeded(event: payment_events.PaymentSucceeded, ctx: RestoreContext) -> None:
    await _record(ctx, event, succeeded=True, reason="", at_us=from_timestamp(event.succeeded_at))


async def failed(event: payment_events.PaymentFailed, ctx: RestoreContext) -> None:
    await _record(ctx, event, succeeded=False, reason=event.reason, at_us=from_timestamp(event.failed_at))


async def refunded(event: payment_events.PaymentRefunded, ctx: RestoreContext) -> None:
    """The refund on the payment row (its fact comes before this one), and the cancellation."""
    at_us = from_timestamp(event.refunded_at)
    await ctx.conn.execute(
        RECORD_REFUND,
        {
            "b_id": event.booking_id,
            "r_id": event.refund_id,
            "r_provider_id": event.provider_refund_id,
            "r_reason": event.reason,
            "r_at": at_us,
        },
    )
    await ctx.conn.execute(
        CANCEL_ONCE[ctx.conn.dialect.name],
        {"booking_id": event.booking_id, "reason": event.reason, "cancelled_at_us": at_us},
    )


async def _record(
    ctx: RestoreContext,
    event: payment_events.PaymentSucceeded | payment_events.PaymentFailed,
    *,
    succeeded: bool,
    reason: str,
    at_us: int,
) -> None:
    """The payment row the handler wrote with this fact, if it is not there."""
    await ctx.conn.execute(
        RECORD_ONCE[ctx.conn.dialect.name],
        {
            "booking_id": event.booking_id,
            "payment_id": event.payment_id,
            "amount_cents": event.amount_cents,
            "currency": event.currency,
            "succeeded": succeeded,
            "failure_reason": reason,
            "provider_charge_id": event.provider_charge_id,
            "created_at_us": at_us,
            "refund_id": "",
            "provider_refund_id": "",
            "refund_reason": "",
            "refunded_at_us": 0,
        },
    )


RECOVERY = Recovery(
    stream=STREAM.name,
    tables=[payments, payment_requests, cancellations],
    restores=[
        Restore(payment_events.PaymentSucceeded, succeeded, handled_by=DURABLE),
        Restore(payment_events.PaymentFailed, failed, handled_by=DURABLE),
        Restore(payment_events.PaymentRefunded, refunded, handled_by=DURABLE),
    ],
)
