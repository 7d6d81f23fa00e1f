"""What the analytics service consumes and serves (``choreo.topology``).

Analytics owns no stream and publishes nothing. It reads the booking facts (from
booking's contract, not booking's code) through its durable consumer ``analytics``,
and answers ``BookingStatsQuery`` on the subject and queue group its contract names
(``query.analytics.booking_stats``, ``analytics``).
"""

from __future__ import annotations

from analytics.handlers import DURABLE, ROUTES
from choreo.analytics.v1 import queries_pb2
from choreo.topology import Serves, Subscription, Topology

#: Analytics' durable consumer of the booking facts.
BOOKINGS = Subscription(DURABLE, ROUTES)

#: The stats query it answers; answering publishes no fact.
STATS = Serves(queries_pb2.BookingStatsQuery)

TOPOLOGY = Topology(service="analytics", subscriptions=(BOOKINGS,), serves=(STATS,))
