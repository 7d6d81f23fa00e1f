"""The payment service's routes: what it does with each fact it consumes.

- durable ``payment`` (BOOKING): ``BookingCreated`` without a resource is charged at
  once (``payment.charges``); with one, its charge is recorded as a request
  (``payment.requests``). ``BookingCancelled`` is recorded, and refunds a charge
  (``payment.refunds``).
- durable ``payment-inventory`` (INVENTORY): ``InventoryReserved`` charges the
  booking's request.

The routes' ``prepare`` steps call the provider outside the transaction; their
handlers record the outcome under the booking's lock (``payment.records``).
"""

from __future__ import annotations

from typing import Any

from choreo.booking.v1 import events_pb2 as booking_events
from choreo.envelope import Envelope
from choreo.handler import HandlerContext, Route
from choreo.inventory.v1 import events_pb2 as inventory_events
from choreo.payment.v1 import events_pb2 as payment_events
from choreo.sealing import TokenOpener
from payment.charges import (
    ChargeAttempt,
    UnreadableTokenError,
    charge_unless_cancelled,
    open_token,
    record_charge,
)
from payment.provider import ChargeRequest, PaymentProvider, RefundResult
from payment.records import Bookings, lock_booking, refund_request
from payment.refunds import check_source as check_cancellation_source
from payment.refunds import record_cancellation
from payment.requests import check_reservation, check_source, pay_by_us, record_request

__all__ = [
    "DURABLE",
    "INVENTORY_DURABLE",
    "UnreadableTokenError",
    "inventory_routes",
    "routes",
]

#: The durable consumer of BOOKING's facts; replicas share it.
DURABLE = "payment"
#: The durable consumer of INVENTORY's reservations.
INVENTORY_DURABLE = "payment-inventory"

_CHARGE_OUTCOMES = (
    payment_events.PaymentSucceeded,
    payment_events.PaymentFailed,
    payment_events.PaymentRefunded,
)


def routes(provider: PaymentProvider, opener: TokenOpener, bookings: Bookings) -> list[Route[Any]]:
    """The routes of durable ``payment``, bound to the provider, the token keys and the database."""

    async def prepare_created(event: booking_events.BookingCreated, _env: Envelope) -> ChargeAttempt | None:
        if event.resource_id:
            return None  # charged on InventoryReserved
        booking = await bookings.read(event.booking_id)

        def request() -> ChargeRequest:
            token = open_token(opener, event.booking_id, event.sealed_payment_token, event.payment_token)
            return ChargeRequest(event.booking_id, event.amount_cents, event.currency, token)

        return await charge_unless_cancelled(provider, booking, request, pay_by_us(event))

    async def created(event: booking_events.BookingCreated, ctx: HandlerContext) -> None:
        if event.resource_id:
            await record_request(opener, event, ctx)
            return
        booking = await lock_booking(ctx.conn, event.booking_id)
        await record_charge(ctx, booking, event.amount_cents, event.currency)

    async def prepare_cancelled(event: booking_events.BookingCancelled, env: Envelope) -> RefundResult:
        check_cancellation_source(env.source, env.id)
        return await provider.refund(refund_request(event.booking_id))

    return [
        Route(booking_events.BookingCreated, created, emits=_CHARGE_OUTCOMES, prepare=prepare_created),
        Route(
            booking_events.BookingCancelled,
            record_cancellation,
            emits=(payment_events.PaymentRefunded,),
            prepare=prepare_cancelled,
        ),
    ]


def inventory_routes(provider: PaymentProvider, opener: TokenOpener, bookings: Bookings) -> list[Route[Any]]:
    """The routes of durable ``payment-inventory``."""

    async def prepare_reserved(
        event: inventory_events.InventoryReserved, env: Envelope
    ) -> ChargeAttempt | None:
        check_source(env)
        booking = await bookings.read(event.booking_id)
        check_reservation(event, booking)

        def request() -> ChargeRequest:
            req = booking.request
            token = open_token(opener, req.booking_id, req.sealed_payment_token)
            return ChargeRequest(req.booking_id, req.amount_cents, req.currency, token)

        pay_by = booking.request.pay_by_us if booking.request is not None else 0
        return await charge_unless_cancelled(provider, booking, request, pay_by)

    async def reserved(event: inventory_events.InventoryReserved, ctx: HandlerContext) -> None:
        check_source(ctx.envelope)
        booking = await lock_booking(ctx.conn, event.booking_id)
        check_reservation(event, booking)
        req = booking.request
        amount, currency = (req.amount_cents, req.currency) if req is not None else (0, "")
        await record_charge(ctx, booking, amount, currency)

    return [
        Route(inventory_events.InventoryReserved, reserved, emits=_CHARGE_OUTCOMES, prepare=prepare_reserved)
    ]
