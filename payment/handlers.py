"""Reaction of the payment service to a new booking.

The payment token arrives sealed to this service's key (``choreo.sealing``); it is
opened right before the charge and never stored or logged. A token that does not
open (sealed to a key this service lacks, altered, missing) is a permanent failure:
the fact goes to the DLQ and nothing is charged.
"""

from __future__ import annotations

import logging

from sqlalchemy import bindparam, select

from choreo.booking.v1 import events_pb2 as booking_events
from choreo.clock import to_timestamp
from choreo.db import now_us
from choreo.envelope import Envelope
from choreo.errors import PermanentError
from choreo.handler import HandlerContext, Route
from choreo.ids import uuid7
from choreo.payment.v1 import events_pb2 as payment_events
from choreo.sealing import SealingError, TokenOpener
from choreo.upserts import insert_new
from payment.provider import ChargeRequest, ChargeResult, PaymentProvider
from payment.tables import payments

log = logging.getLogger(__name__)

#: The durable consumer of new bookings; replicas share it.
DURABLE = "payment"


# Built once: constructing a statement per event (and its cache key) costs more than running it.
# One statement per event: a booking that already has a payment (the same booking in a
# second BookingCreated) inserts nothing, and the handler sees that in the row count.
RECORD_ONCE = {dialect: insert_new(payments, dialect, "booking_id") for dialect in ("sqlite", "postgresql")}
_PAYMENT_OF = select(payments.c.payment_id).where(payments.c.booking_id == bindparam("b_id"))


class UnreadableTokenError(PermanentError):
    """A ``BookingCreated`` whose payment token cannot be read: it is never charged."""


def payment_token(opener: TokenOpener, event: booking_events.BookingCreated) -> str:
    """The token to charge: opened from ``sealed_payment_token``, or the plaintext of an older fact."""
    if event.sealed_payment_token:
        try:
            return opener.open(event.sealed_payment_token, bound_to=event.booking_id)
        except SealingError as exc:
            raise UnreadableTokenError(f"booking {event.booking_id}: payment token {exc}") from None
    if event.payment_token:  # published before tokens were sealed
        return event.payment_token
    raise UnreadableTokenError(f"booking {event.booking_id}: the fact carries no payment token")


async def charge(
    provider: PaymentProvider, opener: TokenOpener, event: booking_events.BookingCreated
) -> ChargeResult:
    """Charges the booking; the booking id is the idempotency key, so a retry never charges twice."""
    return await provider.charge(
        ChargeRequest(
            idempotency_key=event.booking_id,
            amount_cents=event.amount_cents,
            currency=event.currency,
            payment_token=payment_token(opener, event),
        )
    )


async def record_payment(event: booking_events.BookingCreated, ctx: HandlerContext) -> None:
    """Records the charge's outcome and publishes ``PaymentSucceeded`` or ``PaymentFailed``."""
    result: ChargeResult = ctx.prepared
    now = now_us()
    payment_id = f"pay_{uuid7().hex}"
    inserted = await ctx.conn.execute(
        RECORD_ONCE[ctx.conn.dialect.name],
        {
            "booking_id": event.booking_id,
            "payment_id": payment_id,
            "amount_cents": event.amount_cents,
            "currency": event.currency,
            "succeeded": result.succeeded,
            "failure_reason": result.failure_reason,
            "provider_charge_id": result.charge_id,
            "created_at_us": now,
        },
    )
    if inserted.rowcount == 0:
        existing = (await ctx.conn.execute(_PAYMENT_OF, {"b_id": event.booking_id})).scalar_one_or_none()
        log.info("booking %s already has payment %s", event.booking_id, existing)
        return
    if result.succeeded:
        ctx.emit(
            payment_events.PaymentSucceeded(
                payment_id=payment_id,
                booking_id=event.booking_id,
                amount_cents=event.amount_cents,
                currency=event.currency,
                succeeded_at=to_timestamp(now),
                provider_charge_id=result.charge_id,
            )
        )
    else:
        ctx.emit(
            payment_events.PaymentFailed(
                payment_id=payment_id,
                booking_id=event.booking_id,
                reason=result.failure_reason,
                failed_at=to_timestamp(now),
                amount_cents=event.amount_cents,
                currency=event.currency,
                provider_charge_id=result.charge_id,
            )
        )


def routes(provider: PaymentProvider, opener: TokenOpener) -> list[Route[booking_events.BookingCreated]]:
    """The payment service's routes, bound to its provider and the keys that open tokens."""

    async def prepare(event: booking_events.BookingCreated, _env: Envelope) -> ChargeResult:
        return await charge(provider, opener, event)

    outcomes = (payment_events.PaymentSucceeded, payment_events.PaymentFailed)
    return [Route(booking_events.BookingCreated, record_payment, emits=outcomes, prepare=prepare)]
