"""Booking's reaction to inventory: a booking whose units could not be reserved is CANCELLED.

``InventoryReservationFailed`` (reason ``sold_out``) moves a PENDING booking to
CANCELLED with the fact's reason and emits ``BookingCancelled`` (naming the
resource) in one guarded UPDATE. Nothing was charged: payment charges a resource
booking only after ``InventoryReserved``, and on ``BookingCancelled`` it drops the
charge request it kept. A booking no longer PENDING (cancelled by its user or its
timeout meanwhile) is left as it is: a no-op.

As for payment facts (``booking.payment_checks``), the fact must agree with the
booking before it may cancel it: published by inventory (``ce-source``), for an
existing booking of the same workflow, with the booking's resource and quantity.
One that does not is refused for good (``PermanentError``, the DLQ at once): anyone
able to publish on ``inventory.>`` could otherwise cancel any booking. The common
case costs one statement: the agreement is part of the UPDATE, and only an UPDATE
that moved nothing reads the booking to say why.
"""

from __future__ import annotations

import logging
from typing import Any, NoReturn

from sqlalchemy import bindparam, select, update

from booking.domain import SETTLES_FROM, SOLD_OUT, BookingStatus
from booking.payment_checks import FactMismatchError, UnknownBookingError, refuse
from booking.tables import bookings
from choreo.booking.v1 import events_pb2 as booking_events
from choreo.clock import to_timestamp
from choreo.db import now_us
from choreo.handler import HandlerContext, Route
from choreo.inventory.v1 import events_pb2 as inventory_events

log = logging.getLogger(__name__)

#: The durable consumer of inventory facts; replicas share it.
DURABLE = "booking-inventory"
#: ``ce-source`` of every genuine inventory fact (the inventory service's name).
INVENTORY_SOURCE = "inventory"
#: The longest cancellation reason stored (``bookings.cancellation_reason``).
_MAX_REASON = 128


class InventoryMismatchError(FactMismatchError):
    """An inventory fact disagrees with its booking (or was not published by inventory)."""

    publisher = "inventory"


_CANCEL = (
    update(bookings)
    .where(
        bookings.c.booking_id == bindparam("b_id"),
        bookings.c.status == SETTLES_FROM.value,
        bookings.c.resource_id == bindparam("b_resource"),
        bookings.c.quantity == bindparam("b_quantity"),
        bookings.c.correlation_id == bindparam("b_correlation"),
    )
    .values(
        status=BookingStatus.CANCELLED.value,
        cancellation_reason=bindparam("b_reason"),
        updated_at_us=bindparam("b_now"),
    )
    .returning(bookings.c.payment_id)
)
_BOOKING = select(
    bookings.c.status, bookings.c.resource_id, bookings.c.quantity, bookings.c.correlation_id
).where(bookings.c.booking_id == bindparam("b_id"))


async def on_reservation_failed(
    event: inventory_events.InventoryReservationFailed, ctx: HandlerContext
) -> None:
    """PENDING -> CANCELLED (the fact's reason) and ``BookingCancelled``; otherwise a no-op or the DLQ."""
    what = f"InventoryReservationFailed for booking {event.booking_id!r} (event {ctx.envelope.id!r})"
    if ctx.envelope.source != INVENTORY_SOURCE:
        _refuse(what, "ce-source", ctx.envelope.source, INVENTORY_SOURCE, event, ctx)
    reason = (event.reason or SOLD_OUT)[:_MAX_REASON]
    now = now_us()
    moved = (
        await ctx.conn.execute(
            _CANCEL,
            {
                "b_id": event.booking_id,
                "b_resource": event.resource_id,
                "b_quantity": event.quantity,
                "b_correlation": ctx.envelope.correlation_id,
                "b_reason": reason,
                "b_now": now,
            },
        )
    ).one_or_none()
    if moved is None:
        _check_unmoved(what, event, ctx, (await ctx.conn.execute(_BOOKING, {"b_id": event.booking_id})))
        return
    ctx.emit(
        booking_events.BookingCancelled(
            booking_id=event.booking_id,
            reason=reason,
            cancelled_at=to_timestamp(now),
            payment_id=moved.payment_id,
            resource_id=event.resource_id,
        )
    )
    log.info("booking %s cancelled: %s", event.booking_id, reason, extra={"booking_id": event.booking_id})


def _check_unmoved(
    what: str, event: inventory_events.InventoryReservationFailed, ctx: HandlerContext, result: Any
) -> None:
    """Raises unless the booking exists, agrees and is merely no longer PENDING (then a no-op)."""
    booking = result.mappings().one_or_none()
    if booking is None:
        raise UnknownBookingError(f"{what}: no such booking")
    for field, got, want in (
        ("resource_id", event.resource_id, booking["resource_id"]),
        ("quantity", event.quantity, booking["quantity"]),
        ("correlation_id", ctx.envelope.correlation_id, booking["correlation_id"]),
    ):
        if got != want:
            _refuse(what, field, got, want, event, ctx)
    if booking["status"] == SETTLES_FROM.value:
        # Agrees in every field, yet the guarded UPDATE moved nothing: it changed meanwhile.
        raise RuntimeError(f"{what}: booking changed while it was cancelled; retrying")
    log.info(
        "booking %s is already %s; %s ignored",
        event.booking_id,
        booking["status"],
        what,
        extra={"booking_id": event.booking_id, "correlation_id": ctx.envelope.correlation_id},
    )


def _refuse(
    what: str,
    field: str,
    got: object,
    want: object,
    event: inventory_events.InventoryReservationFailed,
    ctx: HandlerContext,
) -> NoReturn:
    refuse(
        InventoryMismatchError,
        what,
        field,
        got,
        want,
        booking_id=event.booking_id,
        correlation_id=ctx.envelope.correlation_id,
    )


ROUTES: list[Route[Any]] = [
    Route(
        inventory_events.InventoryReservationFailed,
        on_reservation_failed,
        emits=(booking_events.BookingCancelled,),
    ),
]
