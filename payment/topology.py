"""What the payment service owns, publishes and consumes (``choreo.topology``).

Payment owns the PAYMENT stream. It reacts to ``BookingCreated`` and
``BookingCancelled`` (read from booking's contract, not booking's code) and to
``InventoryReserved`` (inventory's contract): it charges, refunds, and publishes
``PaymentSucceeded``, ``PaymentFailed`` or ``PaymentRefunded``. Its routes are bound
to the provider, the key that opens tokens and its database, so the topology is
made by ``topology(...)`` at build.
"""

from __future__ import annotations

from choreo.payment.v1 import events_pb2 as payment_events
from choreo.sealing import TokenOpener
from choreo.topology import Stream, Subscription, Topology
from payment.handlers import DURABLE, INVENTORY_DURABLE, inventory_routes, routes
from payment.provider import PaymentProvider
from payment.records import Bookings

#: The stream payment owns: every ``payment.*`` fact.
STREAM = Stream("PAYMENT", ("payment.>",))


def topology(provider: PaymentProvider, opener: TokenOpener, bookings: Bookings) -> Topology:
    """Payment's topology, its routes bound to ``provider``, ``opener`` and ``bookings``."""
    return Topology(
        service="payment",
        stream=STREAM,
        publishes=(
            payment_events.PaymentSucceeded,
            payment_events.PaymentFailed,
            payment_events.PaymentRefunded,
        ),
        subscriptions=(
            Subscription(DURABLE, tuple(routes(provider, opener, bookings))),
            Subscription(INVENTORY_DURABLE, tuple(inventory_routes(provider, opener, bookings))),
        ),
    )
