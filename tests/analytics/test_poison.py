"""A fact analytics cannot use goes to the DLQ and holds back none of the others."""

from __future__ import annotations

import dataclasses

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from analytics.build import build
from analytics.settings import AnalyticsSettings
from choreo.booking.v1 import events_pb2 as booking_events
from choreo.bus import ensure_stream
from choreoctl.stack.natsserver import NatsServer
from tests.analytics.facts import SMALL, expected, figures, stats_of, wait_caught_up, wrap
from tests.streams import BOOKING, DLQ_STREAM
from tests.support import publish, running, stream_count


async def test_a_poison_fact_does_not_block(
    nats_server: NatsServer, database_url: str, nc: NATS, js: JetStreamContext
) -> None:
    await ensure_stream(js, BOOKING)
    cfg = AnalyticsSettings(
        nats_url=nats_server.url,
        database_url=database_url,
        health_port=0,
        max_deliveries=2,
        retry_backoff_seconds=0.05,
        log_format="text",
    )
    good = SMALL[0].facts()
    undecodable = dataclasses.replace(good[0], id="poison-1", data=b"\xff\xff\xff")
    no_booking = wrap(booking_events.BookingConfirmed(booking_id=""), "wf-poison")
    too_long = wrap(booking_events.BookingCreated(booking_id="b-x", currency="EURO"), "wf-poison")
    async with running(build(cfg)):
        for env in (undecodable, no_booking, too_long, *(e for b in SMALL for e in b.facts())):
            await publish(js, env)
        await wait_caught_up(js)
        stats = await stats_of(nc)
        assert await stream_count(js, DLQ_STREAM) == 3
    assert figures(stats) == expected(SMALL)
