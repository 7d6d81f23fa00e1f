"""What the notification service owns, publishes and consumes (``choreo.topology``).

Notification owns the NOTIFICATION stream and publishes ``NotificationSent`` on it.
It reacts to ``BookingCreated``, ``BookingConfirmed`` and ``BookingCancelled`` (read
from booking's contract, not booking's code) through one durable consumer. Its
routes are bound to the SMTP sender, so the topology is made by ``topology(...)``.
"""

from __future__ import annotations

from choreo.notification.v1 import events_pb2 as notification_events
from choreo.topology import Stream, Subscription, Topology
from notification.handlers import DURABLE, Notifier, routes

#: The stream notification owns: every ``notification.*`` fact.
STREAM = Stream("NOTIFICATION", ("notification.>",))


def topology(notifier: Notifier) -> Topology:
    """Notification's topology, its routes bound to ``notifier``."""
    return Topology(
        service="notification",
        stream=STREAM,
        publishes=(notification_events.NotificationSent,),
        subscriptions=(Subscription(DURABLE, tuple(routes(notifier))),),
    )
