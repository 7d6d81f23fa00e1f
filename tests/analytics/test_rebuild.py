"""Analytics' database is rebuilt by replaying BOOKING: a new, empty one gives identical stats."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from sqlalchemy import delete

from analytics.build import build
from analytics.settings import AnalyticsSettings
from analytics.tables import analytics_bookings
from choreo.bus import ensure_stream
from choreo.db import make_engine
from choreoctl.stack.natsserver import NatsServer
from tests.analytics.facts import (
    SECOND,
    SMALL,
    T0,
    Booking,
    analytics_settings,
    expected,
    figures,
    larger,
    stats_of,
    wait_caught_up,
)
from tests.conftest import make_database_url
from tests.streams import BOOKING, BOOKING_STREAM
from tests.support import publish, running


def settings(nats_server: NatsServer, database_url: str) -> AnalyticsSettings:
    return analytics_settings(nats_server.url, database_url)


@contextlib.asynccontextmanager
async def another_database(database_url: str, tmp_path: Path) -> AsyncIterator[str]:
    """A second empty database of the same kind: the first one "deleted"."""
    kind = "sqlite" if database_url.startswith("sqlite") else "postgres"
    async for url in make_database_url(kind, tmp_path):  # dropped when the block ends
        yield url


async def durable_created(js: JetStreamContext) -> object:
    return (await js.consumer_info(BOOKING_STREAM, "analytics")).created


async def test_a_new_database_is_rebuilt_by_replay_with_identical_stats(
    nats_server: NatsServer, database_url: str, nc: NATS, js: JetStreamContext, tmp_path: Path
) -> None:
    await ensure_stream(js, BOOKING)
    bookings: tuple[Booking, ...] = SMALL + larger(30)
    window = (T0 + 2 * SECOND, T0 + 20 * SECOND)
    async with running(build(settings(nats_server, database_url))):
        for env in (env for b in bookings for env in b.facts()):
            await publish(js, env)
        await wait_caught_up(js)
        every, part = await stats_of(nc), await stats_of(nc, *window)
    assert figures(every) == expected(bookings)
    first = await durable_created(js)

    # Restarted on its database: it goes on from where its durable stands (nothing replayed).
    async with running(build(settings(nats_server, database_url))):
        await wait_caught_up(js)
        assert await durable_created(js) == first
        assert await stats_of(nc, *window) == part

    # On an empty database: the durable starts over from BOOKING's first fact.
    async with (
        another_database(database_url, tmp_path) as empty,
        running(build(settings(nats_server, empty))),
    ):
        await wait_caught_up(js)
        assert await durable_created(js) != first
        assert figures(await stats_of(nc)) == figures(every)
        assert await stats_of(nc, *window) == part

    # Its own database with the table emptied (the inbox still naming every fact): the same.
    engine = make_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(delete(analytics_bookings))
    finally:
        await engine.dispose()
    before = await durable_created(js)
    async with running(build(settings(nats_server, database_url))):
        await wait_caught_up(js)
        assert await durable_created(js) != before
        assert await stats_of(nc, *window) == part
