"""How facts fold into a booking's state: small pure functions, order-independent.

Facts about one booking come from several streams (BOOKING, PAYMENT), so the
read model may see them in any order. The merge is therefore built to give the
same result whatever the order:

- a field is filled when a fact carries it, and facts agree on every field they share;
- a terminal status (CONFIRMED, CANCELLED) is never replaced;
- the cancellation reason of ``BookingCancelled`` is final; the one of
  ``PaymentFailed`` only fills the reason until then;
- ``updated_at`` is the latest time of any fact.

Applying a fact twice changes nothing, so a replay is harmless.
"""

from __future__ import annotations

from gateway.readmodel.model import BookingView, Change, Status


def merge_status(current: Status, new: Status) -> Status:
    """A terminal status stays; otherwise the fact's status (if any) applies."""
    if current.is_terminal or new is Status.UNSPECIFIED:
        return current
    return new


def merge_reason(current: str, new: str, *, final: bool) -> str:
    """The booking's own cancellation reason wins; a payment's only fills a blank."""
    if not new:
        return current
    return new if final or not current else current


def merge(current: BookingView | None, change: Change) -> BookingView:
    """The booking's state after ``change`` (``current`` is ``None`` for a new booking)."""
    base = current if current is not None else BookingView(booking_id=change.booking_id)
    return BookingView(
        booking_id=base.booking_id,
        user_id=change.user_id or base.user_id,
        amount_cents=change.amount_cents or base.amount_cents,
        currency=change.currency or base.currency,
        status=merge_status(base.status, change.status),
        correlation_id=change.correlation_id or base.correlation_id,
        payment_id=change.payment_id or base.payment_id,
        cancellation_reason=merge_reason(
            base.cancellation_reason, change.cancellation_reason, final=change.reason_is_final
        ),
        created_at_us=change.created_at_us or base.created_at_us,
        updated_at_us=max(base.updated_at_us, change.at_us),
    )


def conflicting(current: BookingView | None, change: Change) -> bool:
    """True when a fact claims a different terminal status than the one recorded.

    The booking service never does this; the read model keeps the first and logs it.
    """
    return (
        current is not None
        and current.is_terminal
        and change.status.is_terminal
        and change.status is not current.status
    )
