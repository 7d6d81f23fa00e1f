"""Charging a booking once, and never a booking payment saw cancelled.

The payment token arrives sealed to this service's key (``choreo.sealing``); it is
opened right before the charge and never logged. A token that does not open (sealed
to a key this service lacks, altered, missing) is a permanent failure: the fact goes
to the DLQ and nothing is charged.

A charge is asked of the provider in a route's ``prepare`` step, outside the
transaction, and recorded by its handler under the booking's lock
(``payment.records``). The two may see different states:

- the booking was cancelled before ``prepare``: nothing is charged; the provider is
  asked for a refund instead, in case an earlier attempt charged it (a no-op when
  none did), and such a refund is recorded with its charge;
- it was cancelled after ``prepare`` charged it: ``TransientError``; the retry's
  ``prepare`` sees the cancellation and refunds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from choreo.db import now_us
from choreo.errors import PermanentError, TransientError
from choreo.handler import HandlerContext
from choreo.sealing import SealingError, TokenOpener
from payment.provider import ChargeRequest, ChargeResult, PaymentProvider, RefundResult
from payment.records import Booking, clear_token, record_payment, record_refund, refund_request

log = logging.getLogger(__name__)


class UnreadableTokenError(PermanentError):
    """A booking whose payment token cannot be read: it is never charged."""


def open_token(opener: TokenOpener, booking_id: str, sealed: bytes, plaintext: str = "") -> str:
    """The token to charge: opened from ``sealed``, or the plaintext of an older fact."""
    if sealed:
        try:
            return opener.open(sealed, bound_to=booking_id)
        except SealingError as exc:
            raise UnreadableTokenError(f"booking {booking_id}: payment token {exc}") from None
    if plaintext:  # published before tokens were sealed
        return plaintext
    raise UnreadableTokenError(f"booking {booking_id}: the fact carries no payment token")


@dataclass(frozen=True, slots=True)
class ChargeAttempt:
    """What a ``prepare`` step asked of the provider for a booking.

    Attributes:
        charge: The charge made, when the booking was neither paid nor cancelled.
        refund: The refund asked for instead, when the booking was cancelled.
    """

    charge: ChargeResult | None = None
    refund: RefundResult | None = None
    #: Nothing was charged: the booking's ``pay_by`` had passed (booking times it out).
    too_late: bool = False


async def charge_unless_cancelled(
    provider: PaymentProvider, booking: Booking, request: Callable[[], ChargeRequest], pay_by_us: int = 0
) -> ChargeAttempt | None:
    """Charges ``booking`` unless it has a payment (None), a cancellation (refund instead), or
    its ``pay_by`` has passed (``too_late``: a charge now would only be refunded after the timeout).
    """
    if booking.payment is not None:
        return None
    if booking.cancelled is not None:
        return ChargeAttempt(refund=await provider.refund(refund_request(booking.booking_id)))
    if pay_by_us and now_us() >= pay_by_us:
        return ChargeAttempt(too_late=True)
    return ChargeAttempt(charge=await provider.charge(request()))


async def record_charge(ctx: HandlerContext, booking: Booking, amount_cents: int, currency: str) -> None:
    """Records what ``prepare`` did (``ctx.prepared``) for ``booking``, read under its lock."""
    attempt: ChargeAttempt | None = ctx.prepared
    booking_id = booking.booking_id
    if booking.payment is not None:
        log.info("booking %s already has payment %s", booking_id, booking.payment.payment_id)
        return
    if booking.cancelled is not None:
        if attempt is not None and attempt.charge is not None and attempt.charge.succeeded:
            raise TransientError(
                f"booking {booking_id} was cancelled while it was charged: the retry refunds"
            )
        refund = attempt.refund if attempt is not None else None
        if refund is not None and refund.refunded:
            # Charged by an earlier attempt, refunded now: the money moved twice, both are recorded.
            charged = ChargeResult(refund.charge_id, succeeded=True)
            await record_payment(ctx, booking_id, refund.amount_cents, refund.currency, charged)
            await record_refund(ctx, booking_id, refund, booking.cancelled)
        else:
            log.info(
                "booking %s was cancelled (%s): nothing charged, nothing to refund",
                booking_id,
                booking.cancelled,
            )
        await clear_token(ctx.conn, booking)
        return
    if attempt is not None and attempt.too_late:
        log.info("booking %s: not charged, its pay_by passed; booking times it out", booking_id)
        await clear_token(ctx.conn, booking)
        return
    if attempt is None or attempt.charge is None:
        # prepare saw a payment or a cancellation that is not there now (a rebuilt database).
        raise TransientError(f"booking {booking_id} changed since its charge was prepared")
    await record_payment(ctx, booking_id, amount_cents, currency, attempt.charge)
    await clear_token(ctx.conn, booking)
