"""The stats query over real NATS request/reply: refused windows, analytics down, database down."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from nats.aio.client import Client as NATS
from nats.errors import NoRespondersError
from nats.js import JetStreamContext

from analytics.build import build
from analytics.queries import answer
from analytics.settings import AnalyticsSettings
from analytics.stats import nearest_rank
from analytics.topology import STATS
from choreo.analytics.v1 import queries_pb2
from choreo.bus import ensure_stream
from choreo.db import make_engine, now_us
from choreoctl.stack.natsserver import NatsServer
from tests.analytics.facts import SECOND, T0, analytics_settings, ask
from tests.streams import BOOKING
from tests.support import running

INVALID = queries_pb2.QUERY_ERROR_CODE_INVALID_ARGUMENT


def settings(nats_server: NatsServer, tmp_path: Path) -> AnalyticsSettings:
    return analytics_settings(nats_server.url, f"sqlite+aiosqlite:///{tmp_path / 'analytics.db'}")


@pytest.mark.parametrize(
    ("p", "n", "rank"),
    [(50, 0, 0), (50, 1, 1), (99, 1, 1), (50, 6, 3), (95, 6, 6), (99, 100, 99), (95, 101, 96)],
)
def test_nearest_rank(p: int, n: int, rank: int) -> None:
    assert nearest_rank(p, n) == rank


async def test_a_refused_window_names_its_field(
    nats_server: NatsServer, nc: NATS, js: JetStreamContext, tmp_path: Path
) -> None:
    await ensure_stream(js, BOOKING)
    async with running(build(settings(nats_server, tmp_path))):
        backwards = await ask(nc, since_us=T0 + SECOND, until_us=T0)
        bad = queries_pb2.BookingStatsQuery(since=Timestamp(seconds=1, nanos=-1))
        malformed = queries_pb2.BookingStatsReply.FromString(
            (await nc.request(STATS.subject, bad.SerializeToString(), timeout=5)).data
        )
        future = await ask(nc, since_us=now_us() + 3600 * SECOND)
        garbage = queries_pb2.BookingStatsReply.FromString(
            (await nc.request(STATS.subject, b"\xff\xff\xff", timeout=5)).data
        )
    assert (backwards.error.code, backwards.error.field) == (INVALID, "until")
    assert "until" in backwards.error.message
    assert (malformed.error.code, malformed.error.field) == (INVALID, "since")
    assert (future.error.code, future.error.field) == (INVALID, "since")
    assert garbage.error.code == INVALID


async def test_analytics_stopped_means_no_responders(
    nats_server: NatsServer, nc: NATS, js: JetStreamContext, tmp_path: Path
) -> None:
    await ensure_stream(js, BOOKING)
    async with running(build(settings(nats_server, tmp_path))):
        assert (await ask(nc)).WhichOneof("result") == "stats"
    with pytest.raises(NoRespondersError):
        await ask(nc)


async def test_a_database_that_cannot_answer_gives_unavailable() -> None:
    engine = make_engine("postgresql+asyncpg://postgres@127.0.0.1:1/nothing")  # nobody listens on port 1
    try:
        reply = await answer(engine, queries_pb2.BookingStatsQuery().SerializeToString())
    finally:
        await engine.dispose()
    assert reply.error.code == queries_pb2.QUERY_ERROR_CODE_UNAVAILABLE
    assert "127.0.0.1" not in reply.error.message  # the cause is logged, not sent
