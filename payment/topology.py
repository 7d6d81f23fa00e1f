"""What the payment service owns, publishes and consumes (``choreo.topology``).

Payment owns the PAYMENT stream. It reacts to ``BookingCreated`` (read from
booking's contract, not booking's code) by charging, and publishes
``PaymentSucceeded`` or ``PaymentFailed``. Its route is bound to the provider and
the key that opens tokens, so the topology is made by ``topology(...)`` at build.
"""

from __future__ import annotations

from choreo.payment.v1 import events_pb2 as payment_events
from choreo.sealing import TokenOpener
from choreo.topology import Stream, Subscription, Topology
from payment.handlers import DURABLE, routes
from payment.provider import PaymentProvider

#: The stream payment owns: every ``payment.*`` fact.
STREAM = Stream("PAYMENT", ("payment.>",))


def topology(provider: PaymentProvider, opener: TokenOpener) -> Topology:
    """Payment's topology, its route bound to ``provider`` and ``opener``."""
    return Topology(
        service="payment",
        stream=STREAM,
        publishes=(payment_events.PaymentSucceeded, payment_events.PaymentFailed),
        subscriptions=(Subscription(DURABLE, tuple(routes(provider, opener))),),
    )
