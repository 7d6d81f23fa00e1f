"""How facts fold into a booking's state: small pure functions, order-independent.

Facts about one booking come from several streams (BOOKING, PAYMENT, INVENTORY),
and the booking service's own replies are written too, so the read model may see
them in any order. The merge is therefore built to give the same result whatever
the order:

- a field is filled when a fact carries it, and facts agree on every field they share;
- the status only moves forward in one order, UNSPECIFIED < PENDING < CONFIRMED <
  CANCELLED: the highest status any fact implies wins. A CONFIRMED booking may become
  CANCELLED (its user cancelled it), and a ``BookingConfirmed`` seen after its
  ``BookingCancelled`` never un-cancels it;
- the cancellation reason of ``BookingCancelled`` is final; the one of
  ``PaymentFailed`` only fills the reason until then;
- ``updated_at`` is the latest time of any fact.

Applying a fact twice changes nothing, so a replay is harmless.
"""

from __future__ import annotations

from gateway.readmodel.model import BookingView, Change, Status

#: The one reason for which a CONFIRMED booking becomes CANCELLED (the booking service's).
CANCELLED_BY_USER = "cancelled_by_user"


def merge_status(current: Status, new: Status) -> Status:
    """The later of the two statuses in the order a booking moves in (max: commutative)."""
    return new if new.rank > current.rank else current


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
        resource_id=change.resource_id or base.resource_id,
        quantity=change.quantity or base.quantity,
    )


def conflicting(current: BookingView | None, change: Change) -> bool:
    """True when a CONFIRMED and a CANCELLED meet that no transition of the booking service explains.

    The booking service moves a CONFIRMED booking to CANCELLED only when its user cancels
    it; a CONFIRMED next to a cancellation for another reason (a declined card, a sold-out
    resource) is a contradiction. The merge still applies its order (CANCELLED wins, so the
    result does not depend on the order); the store logs it.
    """
    if current is None or not (current.is_terminal and change.status.is_terminal):
        return False
    if current.status is change.status:
        return False
    cancelled = current if current.status is Status.CANCELLED else change
    return cancelled.cancellation_reason != CANCELLED_BY_USER
