"""What the booking service owns, publishes and consumes (``choreo.topology``).

Booking owns the BOOKING stream. It answers ``CreateBookingCommand`` with a
``BookingCreated``, and settles a booking on a payment fact with a
``BookingConfirmed`` or the compensating ``BookingCancelled``. The subjects come
from the contract (``proto/choreo/booking/v1``, ``choreo.options.v1`` options).
"""

from __future__ import annotations

from booking.handlers import DURABLE, ROUTES
from choreo.booking.v1 import commands_pb2
from choreo.booking.v1 import events_pb2 as booking_events
from choreo.topology import Serves, Stream, Subscription, Topology

#: The stream booking owns: every ``booking.*`` fact.
STREAM = Stream("BOOKING", ("booking.>",))

#: Booking's durable consumer of payment facts.
PAYMENTS = Subscription(DURABLE, tuple(ROUTES))

#: The command that creates a booking (``cmd.booking.create``, queue group ``booking``).
CREATE = Serves(commands_pb2.CreateBookingCommand, emits=(booking_events.BookingCreated,))

TOPOLOGY = Topology(
    service="booking",
    stream=STREAM,
    publishes=(
        booking_events.BookingCreated,
        booking_events.BookingConfirmed,
        booking_events.BookingCancelled,
    ),
    subscriptions=(PAYMENTS,),
    serves=(CREATE,),
)
