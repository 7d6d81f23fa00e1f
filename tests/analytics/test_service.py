"""The analytics service in-process: real nats-server, SQLite and PostgreSQL, facts published by hand."""

from __future__ import annotations

import asyncio
import dataclasses
import random

import pytest
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from sqlalchemy import select

from analytics.build import build
from analytics.settings import AnalyticsSettings
from analytics.tables import analytics_bookings
from choreo.analytics.v1 import queries_pb2
from choreo.booking.v1 import events_pb2 as booking_events
from choreo.bus import ensure_stream
from choreo.clock import from_timestamp
from choreo.db import make_engine, now_us
from choreo.envelope import Envelope
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
    wrap,
)
from tests.streams import BOOKING
from tests.support import publish, running


@pytest.fixture(autouse=True)
async def booking_stream(js: JetStreamContext) -> None:
    """The stream the booking service would own: analytics only reads it."""
    await ensure_stream(js, BOOKING)


def settings(nats_server: NatsServer, database_url: str) -> AnalyticsSettings:
    return analytics_settings(nats_server.url, database_url)


async def publish_all(js: JetStreamContext, facts: list[Envelope]) -> None:
    for env in facts:
        await publish(js, env)


def in_order(bookings: tuple[Booking, ...]) -> list[Envelope]:
    return [env for b in bookings for env in b.facts()]


async def test_stats_equal_what_was_created(
    nats_server: NatsServer, database_url: str, nc: NATS, js: JetStreamContext
) -> None:
    bookings = larger()
    async with running(build(settings(nats_server, database_url))):
        # Queries while the facts are being consumed: each answers, none sees fewer than the last.
        done = asyncio.Event()
        seen: list[int] = []

        async def keep_asking() -> None:
            while not done.is_set():
                seen.append((await stats_of(nc)).bookings_created)

        asking = asyncio.create_task(keep_asking())
        await publish_all(js, in_order(bookings))
        await wait_caught_up(js)
        done.set()
        await asking
        assert seen and seen == sorted(seen)
        before = now_us()
        stats = await stats_of(nc)
    want = expected(bookings)
    assert figures(stats) == want
    # Spot checks of the hand computation itself: 57 bookings, 49 settled.
    assert (want.bookings_created, want.bookings_confirmed + want.bookings_cancelled) == (57, 49)
    assert want.settle_p50_ms < want.settle_p95_ms < want.settle_p99_ms
    # An unset window: from the first booking (no since echoed) up to now.
    assert not stats.HasField("since")
    assert before <= from_timestamp(stats.until) <= now_us()


async def test_small_set_by_hand(
    nats_server: NatsServer, database_url: str, nc: NATS, js: JetStreamContext
) -> None:
    async with running(build(settings(nats_server, database_url))):
        await publish_all(js, in_order(SMALL))
        await wait_caught_up(js)
        every = await stats_of(nc)
        middle = await stats_of(nc, T0 + SECOND, T0 + 4 * SECOND)  # b2, b3, b4
        from_b5 = await stats_of(nc, since_us=T0 + 4 * SECOND)  # b5, b6, b7
        before_b2 = await stats_of(nc, until_us=T0 + SECOND)  # b1
        empty = await stats_of(nc, T0 + SECOND, T0 + SECOND)
    # Settled: 100, 300, 200, 50, 1000, 700 ms -> sorted 50 100 200 300 700 1000; ranks 3, 6, 6.
    assert figures(every) == queries_pb2.BookingStats(
        bookings_created=7,
        bookings_confirmed=3,
        bookings_cancelled=3,
        cancellation_reasons={"card_declined": 2, "payment_timeout": 1},
        confirmed_amount_cents_by_currency={"EUR": 350, "USD": 400},
        settle_p50_ms=200.0,
        settle_p95_ms=1000.0,
        settle_p99_ms=1000.0,
    )
    # 300, 200, 50 -> 50 200 300; ranks 2, 3, 3.
    assert figures(middle) == queries_pb2.BookingStats(
        bookings_created=3,
        bookings_confirmed=2,
        bookings_cancelled=1,
        cancellation_reasons={"card_declined": 1},
        confirmed_amount_cents_by_currency={"EUR": 250, "USD": 400},
        settle_p50_ms=200.0,
        settle_p95_ms=300.0,
        settle_p99_ms=300.0,
    )
    assert (from_timestamp(middle.since), from_timestamp(middle.until)) == (T0 + SECOND, T0 + 4 * SECOND)
    # b7 is pending: created, not settled, in no percentile. 1000, 700 -> 700 1000; ranks 1, 2, 2.
    assert figures(from_b5) == queries_pb2.BookingStats(
        bookings_created=3,
        bookings_cancelled=2,
        cancellation_reasons={"card_declined": 1, "payment_timeout": 1},
        settle_p50_ms=700.0,
        settle_p95_ms=1000.0,
        settle_p99_ms=1000.0,
    )
    assert from_timestamp(from_b5.since) == T0 + 4 * SECOND
    assert figures(before_b2) == expected(SMALL[:1])
    assert not before_b2.HasField("since") and from_timestamp(before_b2.until) == T0 + SECOND
    assert figures(empty) == queries_pb2.BookingStats()


async def test_facts_out_of_order_and_twice_give_the_same_stats(
    nats_server: NatsServer, database_url: str, nc: NATS, js: JetStreamContext
) -> None:
    bookings = larger(40)
    facts = in_order(bookings)
    shuffled = list(reversed(facts))  # every settlement before its creation...
    half = len(shuffled) // 2
    tail = shuffled[half:]
    random.Random(11).shuffle(tail)  # ...then, for half of them, any order
    shuffled[half:] = tail
    # Conflicting settlements, later by their own time, one arriving first and one last: in
    # both cases the earlier settlement wins (neither "first arrived" nor "last arrived" does).
    first, last = [b for b in bookings if b.outcome == "confirmed"][:2]
    late = [late_cancellation(b) for b in (first, last)]
    async with running(build(settings(nats_server, database_url))):
        await publish(js, late[0])
        for env in shuffled:
            await publish(js, env)
        # The same facts again: copies past JetStream's de-duplication (the inbox skips them),
        # and the same facts under new event ids (the upserts make them change nothing).
        for i, env in enumerate(facts[::3]):
            await publish(js, env, msg_id=f"copy-{i}")
        for env in facts[1::4]:
            await publish(js, dataclasses.replace(env, id=f"{env.id}x"))
        await publish(js, late[1])
        await wait_caught_up(js)
        stats = await stats_of(nc)
    assert figures(stats) == expected(bookings)
    # Not only the figures: each row is the one the facts in their order give.
    engine = make_engine(database_url)
    try:
        async with engine.connect() as conn:
            rows = {r.booking_id: tuple(r) for r in await conn.execute(select(analytics_bookings))}
    finally:
        await engine.dispose()
    assert rows == {b.booking_id: row_of(b) for b in bookings}


def late_cancellation(b: Booking) -> Envelope:
    """A ``BookingCancelled`` of ``b`` dated a microsecond after its real settlement."""
    late = booking_events.BookingCancelled(booking_id=b.booking_id, reason="late")
    late.cancelled_at.FromMicroseconds(b.created_us + b.settle_us + 1)
    return wrap(late, f"wf-late-{b.booking_id}")


def row_of(b: Booking) -> tuple[object, ...]:
    """The row of ``b`` in ``analytics_bookings`` (its columns' order)."""
    if not b.outcome:
        return (b.booking_id, b.created_us, b.amount_cents, b.currency, None, "", None)
    outcome, reason = ("confirmed", "") if b.outcome == "confirmed" else ("cancelled", b.outcome)
    return (
        b.booking_id,
        b.created_us,
        b.amount_cents,
        b.currency,
        outcome,
        reason,
        b.created_us + b.settle_us,
    )
