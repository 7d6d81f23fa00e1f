"""The analytics service: booking statistics from the booking facts, answered over NATS.

It consumes ``BookingCreated``, ``BookingConfirmed`` and ``BookingCancelled`` from the
BOOKING stream (durable consumer ``analytics``) into a table of its own, one row per
booking, and answers ``BookingStatsQuery`` (``query.analytics.booking_stats``, queue
group ``analytics``) with the statistics of the bookings created in a window. It owns
no stream and publishes nothing; its database is rebuilt by replaying BOOKING
(``analytics.replay``).
"""
