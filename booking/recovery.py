"""How the booking service rebuilds its database from its own stream (``choreo.recovery``).

``BookingCreated`` gives back the PENDING booking with its idempotency key,
request fingerprint, resource and quantity (the token itself is sealed to payment's key: booking never
reads it back), so a client's retry after the rebuild still gets the same booking; ``BookingConfirmed``
and ``BookingCancelled`` give back the outcome (a cancellation from PENDING, or from
CONFIRMED when its user cancelled it), and the payment fact they reacted to goes back
into the inbox of the payment consumer. (A cancellation caused by inventory, the
timeout or a user's command names a fact that consumer never sees: the extra inbox
record is harmless, and the other consumers' handlers are guarded no-ops on replay.)
"""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import bindparam, update

from booking.domain import USER_CANCELS_FROM, BookingStatus, request_fingerprint
from booking.handlers import DURABLE, SETTLE
from booking.settings import BookingSettings
from booking.tables import bookings
from booking.topology import STREAM
from choreo.booking.v1 import events_pb2 as booking_events
from choreo.clock import from_timestamp
from choreo.recovery import Recovery, Restore, RestoreContext
from choreo.upserts import insert_new

#: The settings ``choreo recover booking`` reads.
SETTINGS = BookingSettings


async def created(event: booking_events.BookingCreated, ctx: RestoreContext) -> None:
    at = from_timestamp(event.created_at)
    await ctx.conn.execute(
        insert_new(bookings, ctx.conn.dialect.name, "booking_id"),
        {
            "booking_id": event.booking_id,
            "user_id": event.user_id,
            "amount_cents": event.amount_cents,
            "currency": event.currency,
            "status": BookingStatus.PENDING.value,
            "correlation_id": ctx.envelope.correlation_id,
            "payment_id": "",
            "cancellation_reason": "",
            "idempotency_key": event.idempotency_key or None,
            "request_hash": event.request_fingerprint
            # A fact from before tokens were sealed carries the plaintext token instead.
            or request_fingerprint(event.amount_cents, event.currency, event.payment_token),
            "resource_id": event.resource_id,
            "quantity": event.quantity,
            "created_at_us": at,
            "updated_at_us": at,
        },
    )


async def confirmed(event: booking_events.BookingConfirmed, ctx: RestoreContext) -> None:
    await _settle(ctx, event.booking_id, BookingStatus.CONFIRMED, event.payment_id, "", event.confirmed_at)


async def cancelled(event: booking_events.BookingCancelled, ctx: RestoreContext) -> None:
    # A user may cancel a CONFIRMED booking: the fact moves it from PENDING or CONFIRMED.
    await ctx.conn.execute(
        _CANCEL,
        {
            "b_id": event.booking_id,
            "b_payment_id": event.payment_id,
            "b_reason": event.reason,
            "b_now": from_timestamp(event.cancelled_at),
        },
    )


async def _settle(
    ctx: RestoreContext, booking_id: str, status: BookingStatus, payment_id: str, reason: str, at: Timestamp
) -> None:
    """PENDING -> the outcome, with the handler's own statement."""
    await ctx.conn.execute(
        SETTLE,
        {
            "b_id": booking_id,
            "b_status": status.value,
            "b_payment_id": payment_id,
            "b_reason": reason,
            "b_now": from_timestamp(at),
        },
    )


#: Any cancellation, as the facts tell it (the reason says from where: ``booking.domain``).
_CANCEL = (
    update(bookings)
    .where(
        bookings.c.booking_id == bindparam("b_id"),
        bookings.c.status.in_([s.value for s in USER_CANCELS_FROM]),
    )
    .values(
        status=BookingStatus.CANCELLED.value,
        payment_id=bindparam("b_payment_id"),
        cancellation_reason=bindparam("b_reason"),
        updated_at_us=bindparam("b_now"),
    )
)


RECOVERY = Recovery(
    stream=STREAM.name,
    tables=[bookings],
    restores=[
        Restore(booking_events.BookingCreated, created),
        Restore(booking_events.BookingConfirmed, confirmed, handled_by=DURABLE),
        Restore(booking_events.BookingCancelled, cancelled, handled_by=DURABLE),
    ],
)
