"""Resource bookings: their charge waits for inventory's ``InventoryReserved``.

``BookingCreated`` with a ``resource_id`` records the charge to make (amount,
currency, the token still sealed) as a payment request; ``InventoryReserved``
charges it (``payment.charges``). A fact naming a booking that does not match the
request (another resource, another quantity), or that inventory did not publish,
is refused (DLQ): charging on it could take money for units never set aside.
``InventoryReserved`` that arrives before its ``BookingCreated`` was recorded is
retried (``TransientError``) with the runtime's backoff until it has been.
"""

from __future__ import annotations

import logging

from choreo.booking.v1 import events_pb2 as booking_events
from choreo.clock import from_timestamp
from choreo.db import now_us
from choreo.envelope import Envelope
from choreo.errors import PermanentError, TransientError
from choreo.handler import HandlerContext
from choreo.inventory.v1 import events_pb2 as inventory_events
from choreo.sealing import TokenOpener
from payment.charges import UnreadableTokenError, open_token
from payment.records import REQUEST_ONCE, Booking, lock_booking

log = logging.getLogger(__name__)

#: The ``ce-source`` of the facts a reservation may be charged on.
INVENTORY_SOURCE = "inventory"


def units(quantity: int) -> int:
    """A resource booking's units: a quantity of 0 is 1 (as booking and inventory read it)."""
    return max(quantity, 1)


async def record_request(
    opener: TokenOpener, event: booking_events.BookingCreated, ctx: HandlerContext
) -> None:
    """Records the charge a resource booking will get once its units are reserved."""
    booking = await lock_booking(ctx.conn, event.booking_id)
    if booking.request is not None or booking.payment is not None:
        log.info("booking %s: its payment request is recorded already", event.booking_id)
        return
    if booking.cancelled is not None:
        log.info(
            "booking %s was cancelled (%s) before it was created here: never charged",
            event.booking_id,
            booking.cancelled,
        )
        return
    if not event.sealed_payment_token:
        raise UnreadableTokenError(f"booking {event.booking_id}: the fact carries no sealed payment token")
    open_token(opener, event.booking_id, event.sealed_payment_token)  # refused now, not at the charge
    await ctx.conn.execute(
        REQUEST_ONCE[ctx.conn.dialect.name],
        {
            "booking_id": event.booking_id,
            "resource_id": event.resource_id,
            "quantity": units(event.quantity),
            "amount_cents": event.amount_cents,
            "currency": event.currency,
            "sealed_payment_token": event.sealed_payment_token,
            "pay_by_us": pay_by_us(event),
            "created_at_us": now_us(),
        },
    )


def check_source(env: Envelope) -> None:
    """Only inventory says units are reserved."""
    if env.source != INVENTORY_SOURCE:
        raise PermanentError(
            f"InventoryReserved {env.id} comes from {env.source!r}, not {INVENTORY_SOURCE!r}: not charged on"
        )


def check_reservation(event: inventory_events.InventoryReserved, booking: Booking) -> None:
    """The reservation is of the booking's request, which is recorded (unless the booking is settled)."""
    if booking.payment is not None or booking.cancelled is not None:
        return  # nothing will be charged on it
    request = booking.request
    if request is None:
        raise TransientError(
            f"booking {event.booking_id} is reserved but its BookingCreated is not recorded yet"
        )
    if (request.resource_id, request.quantity) != (event.resource_id, units(event.quantity)):
        raise PermanentError(
            f"booking {event.booking_id}: reserved {units(event.quantity)} of {event.resource_id!r}, "
            f"but it asks for {request.quantity} of {request.resource_id!r}"
        )


def pay_by_us(event: booking_events.BookingCreated) -> int:
    """When payment stops starting charges for the booking (Unix microseconds; 0: never)."""
    return from_timestamp(event.pay_by) if event.HasField("pay_by") else 0
