"""What the booking service owns, publishes and consumes (``choreo.topology``).

Booking owns the BOOKING stream. It answers ``CreateBookingCommand`` with a
``BookingCreated`` and ``CancelBookingCommand`` with a ``BookingCancelled``; it
settles a booking on a payment fact with a ``BookingConfirmed`` or the
compensating ``BookingCancelled``, cancels it when inventory has no units left
(``booking-inventory``) and when its payment does not answer in time
(``booking-timeouts``, a consumer of booking's own ``BookingCreated``). The
subjects come from the contract (``proto/choreo/booking/v1``, ``choreo.options.v1`` options).
"""

from __future__ import annotations

from booking import sold_out, timeouts
from booking.handlers import DURABLE, ROUTES
from booking.settings import DEFAULT_PAYMENT_TIMEOUT_SECONDS
from choreo.booking.v1 import commands_pb2
from choreo.booking.v1 import events_pb2 as booking_events
from choreo.topology import Serves, Stream, Subscription, Topology

#: The stream booking owns: every ``booking.*`` fact.
STREAM = Stream("BOOKING", ("booking.>",))

#: Booking's durable consumer of payment facts.
PAYMENTS = Subscription(DURABLE, tuple(ROUTES))

#: Booking's durable consumer of inventory's refusals (``booking-inventory``).
INVENTORY = Subscription(sold_out.DURABLE, tuple(sold_out.ROUTES))

#: The command that creates a booking (``cmd.booking.create``, queue group ``booking``).
CREATE = Serves(commands_pb2.CreateBookingCommand, emits=(booking_events.BookingCreated,))

#: The command that cancels a booking for its user (``cmd.booking.cancel``, queue group ``booking``).
CANCEL = Serves(commands_pb2.CancelBookingCommand, emits=(booking_events.BookingCancelled,))


def timeouts_subscription(payment_timeout_seconds: int) -> Subscription:
    """``booking-timeouts``: booking's durable consumer of its own ``BookingCreated``, timing bookings out."""
    return Subscription(timeouts.DURABLE, timeouts.routes(payment_timeout_seconds))


def topology(payment_timeout_seconds: int = DEFAULT_PAYMENT_TIMEOUT_SECONDS) -> Topology:
    """Booking's topology with its payment timeout (a setting the route of ``booking-timeouts`` carries)."""
    return Topology(
        service="booking",
        stream=STREAM,
        publishes=(
            booking_events.BookingCreated,
            booking_events.BookingConfirmed,
            booking_events.BookingCancelled,
        ),
        subscriptions=(PAYMENTS, INVENTORY, timeouts_subscription(payment_timeout_seconds)),
        serves=(CREATE, CANCEL),
    )


#: Booking's topology with the default payment timeout (what tools draw and check).
TOPOLOGY = topology()
#: ``booking-timeouts`` with the default payment timeout.
TIMEOUTS = TOPOLOGY.subscriptions[2]
