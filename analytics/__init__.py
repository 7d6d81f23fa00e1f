"""The analytics service: booking statistics from the booking facts, answered over NATS.

It consumes ``BookingCreated``, ``BookingConfirmed`` and ``BookingCancelled`` from the
BOOKING stream (durable consumer ``analytics``) into a table of its own, one row per
booking (``analytics.handlers``: upserts that give the same row in any order), and
answers ``choreo.analytics.v1.BookingStatsQuery`` on ``query.analytics.booking_stats``
(queue group ``analytics``, from the contract) with the statistics of the bookings
created in ``[since, until)`` (``analytics.queries``, ``analytics.stats``). It owns no
stream and publishes nothing.

Settings are ``ANALYTICS_*`` (``analytics.settings``): among them ``ANALYTICS_NATS_URL``,
``ANALYTICS_DATABASE_URL`` (default ``sqlite+aiosqlite:///./var/analytics.db``),
``ANALYTICS_HEALTH_PORT`` (8084) and ``ANALYTICS_QUERY_BATCH_SIZE``.

Rebuilding: its database holds nothing the BOOKING stream does not. Delete it (or empty
its table) and restart: the durable consumer starts over from BOOKING's first fact
(``choreo.startover``) and the stats come back identical.
"""
