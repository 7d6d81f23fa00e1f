"""A fact analytics cannot use goes to the DLQ and holds back none of the others."""

from __future__ import annotations

import dataclasses

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from analytics.build import build
from choreo.booking.v1 import events_pb2 as booking_events
from choreo.bus import ensure_stream
from choreoctl.stack.natsserver import NatsServer
from tests.analytics.facts import SMALL, analytics_settings, expected, figures, stats_of, wait_caught_up, wrap
from tests.streams import BOOKING, DLQ_STREAM
from tests.support import publish, running, stream_count


async def test_a_poison_fact_does_not_block(
    nats_server: NatsServer, database_url: str, nc: NATS, js: JetStreamContext
) -> None:
    await ensure_stream(js, BOOKING)
    cfg = analytics_settings(nats_server.url, database_url)
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
