"""Wiring of the analytics service."""

from __future__ import annotations

from analytics.migrations import MIGRATIONS
from analytics.queries import BookingStatsHandler
from analytics.settings import AnalyticsSettings
from analytics.tables import analytics_bookings
from analytics.topology import BOOKINGS, STATS, TOPOLOGY
from choreo.commands import CommandServer
from choreo.runtime import open_runtime
from choreo.service import Service
from choreo.startover import start_over_if_empty


async def build(settings: AnalyticsSettings) -> Service:
    """Assembles the analytics service: the booking-facts consumer and the stats query server."""
    rt = await open_runtime(settings, TOPOLOGY, migrations=MIGRATIONS)
    service = rt.service(
        [
            CommandServer(
                rt.nc,
                STATS.subject,
                queue=STATS.queue,
                handler=BookingStatsHandler(rt.engine),
                max_batch=settings.query_batch_size,
            ),
            rt.consumer(BOOKINGS),
        ]
    )
    try:
        # Before the consumer runs: an empty database replays BOOKING from its first fact.
        await start_over_if_empty(rt.js, rt.engine, BOOKINGS, (analytics_bookings,))
    except BaseException:
        await service.stop(grace=0)
        raise
    return service
