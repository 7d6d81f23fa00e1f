"""The payment timeout: a booking still PENDING some time after its creation is CANCELLED.

Booking consumes its own ``BookingCreated`` facts with a durable consumer of its own
(``booking-timeouts``). The route's ``prepare`` step computes when the booking is due
(``created_at`` + the timeout); until then it raises ``choreo.errors.Deferred``, and
the consumer hands the fact back to JetStream with exactly the delay left. So the
wait is kept by JetStream, not by this process: it survives restarts, replicas share
it, and no table is polled. When due, the handler's guarded UPDATE moves a booking
that is still PENDING to CANCELLED with reason ``payment_timeout`` and emits
``BookingCancelled`` (payment then never charges, or refunds a charge it made;
inventory releases the units). A booking settled meanwhile is left as it is.

The fact must be the booking's own: the UPDATE also matches its workflow
(correlation id) and its creation time, so a copy of another fact with an earlier
``created_at`` cannot cancel a booking early; one that names a booking with other
values is refused for good (``PermanentError``).

JetStream holds each waiting fact as unacknowledged, and ``max_ack_pending`` (K, at
least 1000) bounds how many wait at once: past K/timeout bookings a second, the next
fact is fetched late. That delays the fetch, never the timeout: facts come in creation
order and all wait the same time, so a slot frees when the oldest waiting fact comes
due, and the fact fetched then is the oldest not yet fetched. At a rate r it is fetched
about timeout - K/r seconds after its creation and waits the rest: it still fires when
due. A burst held back fires as fast as the handler settles facts once they are due.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, select, update

from booking.domain import PAYMENT_TIMEOUT, SETTLES_FROM, BookingStatus
from booking.tables import bookings
from choreo.booking.v1 import events_pb2 as booking_events
from choreo.clock import from_timestamp, to_timestamp
from choreo.db import now_us
from choreo.envelope import Envelope
from choreo.errors import Deferred, PermanentError
from choreo.handler import HandlerContext, Route

log = logging.getLogger(__name__)

#: The durable consumer of booking's own ``BookingCreated`` facts that times bookings out.
DURABLE = "booking-timeouts"


class ForeignBookingFactError(PermanentError):
    """A ``BookingCreated`` whose workflow or creation time is not its booking's."""


_TIME_OUT = (
    update(bookings)
    .where(
        bookings.c.booking_id == bindparam("b_id"),
        bookings.c.status == SETTLES_FROM.value,
        bookings.c.correlation_id == bindparam("b_correlation"),
        bookings.c.created_at_us == bindparam("b_created"),
    )
    .values(
        status=BookingStatus.CANCELLED.value,
        cancellation_reason=PAYMENT_TIMEOUT,
        updated_at_us=bindparam("b_now"),
    )
    .returning(bookings.c.payment_id, bookings.c.resource_id)
)
_BOOKING = select(bookings.c.status, bookings.c.correlation_id, bookings.c.created_at_us).where(
    bookings.c.booking_id == bindparam("b_id")
)


@dataclass(frozen=True, slots=True)
class PaymentTimeout:
    """The route's ``prepare`` step: "not yet" (``Deferred``) until the booking is due.

    A value (equal for equal timeouts), so that the topology declared with it equals the
    one the service runs.

    Attributes:
        seconds: How long a booking may stay PENDING (``BOOKING_PAYMENT_TIMEOUT_SECONDS``).
    """

    seconds: int

    async def __call__(self, event: booking_events.BookingCreated, envelope: Envelope) -> None:
        # The due time the fact announced (payment charges nothing after it), else the setting's.
        if event.HasField("pay_by"):
            due = from_timestamp(event.pay_by) / 1_000_000
        else:
            due = from_timestamp(event.created_at) / 1_000_000 + self.seconds
        left = due - time.time()
        if left > 0:
            raise Deferred(left)


async def on_due(event: booking_events.BookingCreated, ctx: HandlerContext) -> None:
    """PENDING -> CANCELLED (``payment_timeout``) and ``BookingCancelled``; anything else is a no-op."""
    now = now_us()
    moved = (
        await ctx.conn.execute(
            _TIME_OUT,
            {
                "b_id": event.booking_id,
                "b_correlation": ctx.envelope.correlation_id,
                "b_created": from_timestamp(event.created_at),
                "b_now": now,
            },
        )
    ).one_or_none()
    if moved is None:
        _check_unmoved(event, ctx, (await ctx.conn.execute(_BOOKING, {"b_id": event.booking_id})))
        return
    ctx.emit(
        booking_events.BookingCancelled(
            booking_id=event.booking_id,
            reason=PAYMENT_TIMEOUT,
            cancelled_at=to_timestamp(now),
            payment_id=moved.payment_id,
            resource_id=moved.resource_id,
        )
    )
    log.info(
        "booking %s cancelled: no payment outcome within the timeout",
        event.booking_id,
        extra={"booking_id": event.booking_id, "correlation_id": ctx.envelope.correlation_id},
    )


def _check_unmoved(event: booking_events.BookingCreated, ctx: HandlerContext, result: Any) -> None:
    booking = result.mappings().one_or_none()
    if booking is None:
        # Its own stream names a booking the database lacks (lost, not yet rebuilt): nothing to time out.
        log.warning("booking %s is unknown; its payment timeout is ignored", event.booking_id)
        return
    if (booking["correlation_id"], booking["created_at_us"]) != (
        ctx.envelope.correlation_id,
        from_timestamp(event.created_at),
    ):
        raise ForeignBookingFactError(
            f"BookingCreated {ctx.envelope.id!r} for booking {event.booking_id!r} does not match it "
            "(workflow or creation time): it may not time it out"
        )
    if booking["status"] == SETTLES_FROM.value:
        raise RuntimeError(f"booking {event.booking_id} changed while it was timed out; retrying")
    log.debug("booking %s is %s; no timeout", event.booking_id, booking["status"])


def routes(seconds: int) -> tuple[Route[Any], ...]:
    """The timeout consumer's route, for a timeout of ``seconds``."""
    return (
        Route(
            booking_events.BookingCreated,
            on_due,
            emits=(booking_events.BookingCancelled,),
            prepare=PaymentTimeout(seconds),
        ),
    )
