"""Two replicas on one empty database under a durable that has read everything: one answer."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from analytics.build import build
from analytics.settings import AnalyticsSettings
from choreo.bus import ensure_stream
from choreoctl.stack.natsserver import NatsServer
from tests.analytics.facts import (
    SMALL,
    analytics_settings,
    expected,
    figures,
    larger,
    stats_of,
    wait_caught_up,
)
from tests.analytics.test_rebuild import another_database
from tests.streams import BOOKING
from tests.support import publish, running


def settings(nats_server: NatsServer, database_url: str) -> AnalyticsSettings:
    return analytics_settings(nats_server.url, database_url)


async def test_replicas_rebuilding_together_agree(
    nats_server: NatsServer, database_url: str, nc: NATS, js: JetStreamContext, tmp_path: Path
) -> None:
    if database_url.startswith("sqlite"):
        pytest.skip("replicas share a PostgreSQL database; a SQLite file serves one process")
    await ensure_stream(js, BOOKING)
    bookings = SMALL + larger(25)
    for env in (env for b in bookings for env in b.facts()):
        await publish(js, env)
    # A first deployment read everything into a database that is then lost.
    async with another_database(database_url, tmp_path) as lost, running(build(settings(nats_server, lost))):
        await wait_caught_up(js)
    # Two replicas start together on a new database: each may delete the durable.
    first, second = await asyncio.gather(*(build(settings(nats_server, database_url)) for _ in range(2)))
    await asyncio.gather(first.start(), second.start())
    try:
        await wait_caught_up(js)
        # The queue group spreads the queries over both replicas: every answer is the same.
        answers = [figures(await stats_of(nc)) for _ in range(8)]
    finally:
        await asyncio.gather(first.stop(grace=5), second.stop(grace=5))
    assert answers == [expected(bookings)] * 8
