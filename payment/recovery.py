"""How the payment service rebuilds its database from its own stream (``choreo.recovery``).

Each ``PaymentSucceeded`` or ``PaymentFailed`` gives back the payment row, and the
``BookingCreated`` it reacted to goes back into the inbox of the booking consumer:
after the rebuild, a redelivered ``BookingCreated`` is a duplicate, not a charge.
"""

from __future__ import annotations

from choreo.clock import from_timestamp
from choreo.payment.v1 import events_pb2 as payment_events
from choreo.recovery import Recovery, Restore, RestoreContext
from payment.handlers import DURABLE, RECORD_ONCE
from payment.settings import PaymentSettings
from payment.tables import payments
from payment.topology import STREAM

#: The settings ``choreo recover payment`` reads.
SETTINGS = PaymentSettings


async def succeeded(event: payment_events.PaymentSucceeded, ctx: RestoreContext) -> None:
    await _record(ctx, event, succeeded=True, reason="", at_us=from_timestamp(event.succeeded_at))


async def failed(event: payment_events.PaymentFailed, ctx: RestoreContext) -> None:
    await _record(ctx, event, succeeded=False, reason=event.reason, at_us=from_timestamp(event.failed_at))


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
        },
    )


RECOVERY = Recovery(
    stream=STREAM.name,
    tables=[payments],
    restores=[
        Restore(payment_events.PaymentSucceeded, succeeded, handled_by=DURABLE),
        Restore(payment_events.PaymentFailed, failed, handled_by=DURABLE),
    ],
)
