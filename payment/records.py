"""What payment knows of one booking, and the rows and facts that record its money.

Every handler touching a booking first takes the booking's lock (``lock_booking``,
``choreo.db.lock_key``) and only then reads: a charge and a cancellation of one
booking handled at once (two replicas, two consumers) take turns, and the second
sees what the first committed. A route's ``prepare`` step reads the same state
without the lock (``Bookings``) to decide what to ask the provider; its handler
checks again under the lock, so a decision taken on a state that changed meanwhile
is retried (``TransientError``), never recorded.

Each fact is published at most once because each is emitted only by a write that
happens once: ``PaymentSucceeded``/``PaymentFailed`` with the insert-once of the
booking's payment, ``PaymentRefunded`` with the update guarded by ``refund_id = ''``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from sqlalchemy import String, bindparam, cast, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from choreo.clock import to_timestamp
from choreo.db import lock_key, now_us, read_only
from choreo.handler import HandlerContext
from choreo.ids import uuid7
from choreo.payment.v1 import events_pb2 as payment_events
from choreo.upserts import insert_new
from payment.provider import ChargeResult, RefundRequest, RefundResult
from payment.tables import cancellations, payment_requests, payments

log = logging.getLogger(__name__)

#: The namespace of the bookings' locks (``choreo.db.lock_key``).
LOCK_NAMESPACE = "payment"

_DIALECTS = ("sqlite", "postgresql")
# Built once: constructing a statement per event (and its cache key) costs more than running it.
RECORD_ONCE = {dialect: insert_new(payments, dialect, "booking_id") for dialect in _DIALECTS}
CANCEL_ONCE = {dialect: insert_new(cancellations, dialect, "booking_id") for dialect in _DIALECTS}
REQUEST_ONCE = {dialect: insert_new(payment_requests, dialect, "booking_id") for dialect in _DIALECTS}
_PAYMENT = select(payments).where(payments.c.booking_id == bindparam("b_id"))
#: What payment knows of a booking in one statement: the booking id, outer-joined to its
#: payment (``p_*``), its cancellation (``c_reason``) and its request (``r_*``).
_KEY = select(cast(bindparam("b_id"), String(64)).label("booking_id")).subquery("k")
_BOOKING = select(
    *(c.label(f"p_{c.name}") for c in payments.c),
    cancellations.c.reason.label("c_reason"),
    *(c.label(f"r_{c.name}") for c in payment_requests.c),
).select_from(
    _KEY.outerjoin(payments, payments.c.booking_id == _KEY.c.booking_id)
    .outerjoin(cancellations, cancellations.c.booking_id == _KEY.c.booking_id)
    .outerjoin(payment_requests, payment_requests.c.booking_id == _KEY.c.booking_id)
)
_CLEAR_TOKEN = (
    update(payment_requests)
    .where(payment_requests.c.booking_id == bindparam("b_id"), payment_requests.c.sealed_payment_token != b"")
    .values(sealed_payment_token=b"")
)
RECORD_REFUND = (
    update(payments)
    .where(
        payments.c.booking_id == bindparam("b_id"),
        payments.c.succeeded.is_(True),
        payments.c.refund_id == "",
    )
    .values(
        refund_id=bindparam("r_id"),
        provider_refund_id=bindparam("r_provider_id"),
        refund_reason=bindparam("r_reason"),
        refunded_at_us=bindparam("r_at"),
    )
)


@dataclass(frozen=True, slots=True)
class Booking:
    """What payment knows of one booking.

    Attributes:
        booking_id: The booking.
        payment: Its payments row, once it was charged (or declined).
        cancelled: Its cancellation's reason, once payment saw ``BookingCancelled``.
        request: Its payment_requests row, for a resource booking awaiting ``InventoryReserved``.
    """

    booking_id: str
    payment: Any = None
    cancelled: str | None = None
    request: Any = None


async def read_booking(conn: AsyncConnection, booking_id: str) -> Booking:
    row = (await conn.execute(_BOOKING, {"b_id": booking_id})).mappings().one()
    return Booking(
        booking_id,
        _part(row, "p_", payments.c.keys()),
        row["c_reason"],
        _part(row, "r_", payment_requests.c.keys()),
    )


def _part(row: Any, prefix: str, names: Any) -> SimpleNamespace | None:
    """One table's columns of the joined row (attributes named as the table's), or None when it had no row."""
    if row[f"{prefix}booking_id"] is None:
        return None
    return SimpleNamespace(**{name: row[f"{prefix}{name}"] for name in names})


async def lock_booking(conn: AsyncConnection, booking_id: str) -> Booking:
    """Takes the booking's lock for the rest of the transaction, then reads it."""
    await lock_key(conn, LOCK_NAMESPACE, booking_id)
    return await read_booking(conn, booking_id)


class Bookings:
    """Reads a booking before the transaction, for a route's ``prepare`` step.

    The routes are made before the service's database is opened (they are part of its
    topology), so the engine is bound afterwards (``bind``).
    """

    def __init__(self, engine: AsyncEngine | None = None) -> None:
        self._engine = engine

    def bind(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def read(self, booking_id: str) -> Booking:
        if self._engine is None:
            raise RuntimeError("Bookings is not bound to the service's database yet")
        async with read_only(self._engine) as conn:
            # One statement, so one snapshot: a request's token and the cancellation that
            # cleared it are seen together (``_BOOKING``).
            booking = await read_booking(conn, booking_id)
            await conn.rollback()
        return booking


def refund_request(booking_id: str) -> RefundRequest:
    """The refund of a booking's charge: one refund key per booking, as one charge key."""
    return RefundRequest(charge_key=booking_id, idempotency_key=f"{booking_id}:refund")


async def clear_token(conn: AsyncConnection, booking: Booking) -> None:
    """Forgets the sealed token of the booking's request (read under its lock): charged or cancelled."""
    if booking.request is not None and booking.request.sealed_payment_token:
        await conn.execute(_CLEAR_TOKEN, {"b_id": booking.booking_id})


async def record_payment(
    ctx: HandlerContext, booking_id: str, amount_cents: int, currency: str, result: ChargeResult
) -> bool:
    """Records the charge's outcome once and publishes ``PaymentSucceeded`` or ``PaymentFailed``.

    Returns False (nothing emitted) when the booking already had a payment.
    """
    now = now_us()
    payment_id = f"pay_{uuid7().hex}"
    inserted = await ctx.conn.execute(
        RECORD_ONCE[ctx.conn.dialect.name],
        {
            "booking_id": booking_id,
            "payment_id": payment_id,
            "amount_cents": amount_cents,
            "currency": currency,
            "succeeded": result.succeeded,
            "failure_reason": result.failure_reason,
            "provider_charge_id": result.charge_id,
            "created_at_us": now,
            "refund_id": "",
            "provider_refund_id": "",
            "refund_reason": "",
            "refunded_at_us": 0,
        },
    )
    if inserted.rowcount == 0:
        log.info("booking %s already has a payment", booking_id)
        return False
    if result.succeeded:
        ctx.emit(
            payment_events.PaymentSucceeded(
                payment_id=payment_id,
                booking_id=booking_id,
                amount_cents=amount_cents,
                currency=currency,
                succeeded_at=to_timestamp(now),
                provider_charge_id=result.charge_id,
            )
        )
    else:
        ctx.emit(
            payment_events.PaymentFailed(
                payment_id=payment_id,
                booking_id=booking_id,
                reason=result.failure_reason,
                failed_at=to_timestamp(now),
                amount_cents=amount_cents,
                currency=currency,
                provider_charge_id=result.charge_id,
            )
        )
    return True


async def record_refund(ctx: HandlerContext, booking_id: str, refund: RefundResult, reason: str) -> bool:
    """Records the refund of the booking's succeeded payment once and publishes ``PaymentRefunded``.

    Returns False (nothing emitted) when the payment was refunded already, or is not a succeeded one.
    """
    now = now_us()
    refund_id = f"rfd_{uuid7().hex}"
    params = {
        "b_id": booking_id,
        "r_id": refund_id,
        "r_provider_id": refund.refund_id,
        "r_reason": reason,
        "r_at": now,
    }
    if (await ctx.conn.execute(RECORD_REFUND, params)).rowcount != 1:
        return False
    payment = (await ctx.conn.execute(_PAYMENT, {"b_id": booking_id})).one()
    ctx.emit(
        payment_events.PaymentRefunded(
            refund_id=refund_id,
            payment_id=payment.payment_id,
            booking_id=booking_id,
            amount_cents=payment.amount_cents,
            currency=payment.currency,
            refunded_at=to_timestamp(now),
            provider_refund_id=refund.refund_id,
            reason=reason,
        )
    )
    log.info("booking %s: payment %s refunded (%s)", booking_id, payment.payment_id, reason)
    return True
