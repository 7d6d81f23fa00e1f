"""Rebuilding booking's database by replay: cut short, shared by replicas, over a stream with holes."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from booking.migrations import MIGRATIONS
from booking.recovery import RECOVERY
from booking.tables import bookings
from choreo.booking.v1 import events_pb2
from choreo.bus import ensure_stream
from choreo.clock import to_timestamp
from choreo.db import make_engine, now_us
from choreo.envelope import Envelope
from choreo.recovery import recover_if_lost
from choreo.schema import prepare_schema
from choreoctl.stack.natsserver import NatsServer
from choreoctl.stack.ports import free_port
from tests.streams import BOOKING, BOOKING_CREATED, BOOKING_STREAM
from tests.support import row_count

N = 2000


async def fill(js: JetStreamContext, n: int = N) -> None:
    """``n`` BookingCreated facts, as booking would have published them."""
    await ensure_stream(js, BOOKING)
    acks = []
    for i in range(n):
        event = events_pb2.BookingCreated(
            booking_id=f"b{i:05d}",
            user_id=f"u{i % 7}",
            amount_cents=1000,
            currency="EUR",
            payment_token="tok_visa",
            created_at=to_timestamp(now_us()),
            idempotency_key=f"key-{i}",
        )
        env = Envelope.wrap(event, source="booking", subject=BOOKING_CREATED, correlation_id=f"wf-{i}")
        acks.append(await js.publish_async(env.subject, env.data, headers=env.headers()))
    await asyncio.gather(*acks)


async def open_engine(url: str) -> AsyncEngine:
    engine = make_engine(url)
    await prepare_schema(engine, MIGRATIONS, mode="auto", service="booking", setting="BOOKING_MIGRATE")
    return engine


async def count(engine: AsyncEngine) -> int:
    return await row_count(engine, bookings)


async def started_rebuild(nc: NATS, js: JetStreamContext, engine: AsyncEngine) -> asyncio.Task[object]:
    """A start-up rebuild, returned once its first batch is committed."""
    task: asyncio.Task[object] = asyncio.create_task(
        recover_if_lost(nc, js, engine, RECOVERY, service="booking")
    )
    while await count(engine) == 0:
        assert not task.done(), task
        await asyncio.sleep(0.01)
    return task


async def test_a_rebuild_cut_short_is_resumed_at_the_next_start(
    nc: NATS, js: JetStreamContext, database_url: str
) -> None:
    await fill(js)
    engine = await open_engine(database_url)
    try:
        task = await started_rebuild(nc, js, engine)
        task.cancel()  # killed while rebuilding
        await asyncio.gather(task, return_exceptions=True)
        partial = await count(engine)
        assert 0 < partial < N, "the rebuild was not cut short: the test proves nothing"
        report = await recover_if_lost(nc, js, engine, RECOVERY, service="booking")
        assert report is not None, "the next start did not finish the rebuild"
        assert await count(engine) == N
        assert await recover_if_lost(nc, js, engine, RECOVERY, service="booking") is None, "rebuilt twice"
    finally:
        await engine.dispose()


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_a_replica_starting_during_a_rebuild_waits_for_it(
    nc: NATS, js: JetStreamContext, database_url: str
) -> None:
    await fill(js)
    a, b = await open_engine(database_url), await open_engine(database_url)
    try:
        rebuilding = await started_rebuild(nc, js, a)
        await recover_if_lost(nc, js, b, RECOVERY, service="booking")
        seen_by_b = await count(b)
        await rebuilding
    finally:
        await a.dispose()
        await b.dispose()
    assert seen_by_b == N, f"replica B would have served a partial database ({seen_by_b} of {N})"


async def test_a_stream_whose_last_fact_was_deleted_is_replayed_to_its_end(
    nc: NATS, js: JetStreamContext, database_url: str
) -> None:
    await fill(js, 10)
    await js.delete_msg(BOOKING_STREAM, 10)  # an operator removed the last fact
    engine = await open_engine(database_url)
    try:
        report = await asyncio.wait_for(recover_if_lost(nc, js, engine, RECOVERY, service="booking"), 30)
        assert report is not None and report.facts == 9
        assert await count(engine) == 9
    finally:
        await engine.dispose()


async def test_a_stream_that_lost_its_first_facts_says_the_rebuild_is_partial(
    nc: NATS, js: JetStreamContext, database_url: str
) -> None:
    await fill(js, 10)
    await js.purge_stream(BOOKING_STREAM, seq=6)  # facts 1-5 gone
    engine = await open_engine(database_url)
    try:
        report = await recover_if_lost(nc, js, engine, RECOVERY, service="booking")
    finally:
        await engine.dispose()
    assert report is not None and report.facts == 5
    assert report.missing == 5


async def test_the_health_port_answers_while_a_lost_database_is_rebuilt(
    nats_server: NatsServer, js: JetStreamContext, tmp_path: Path
) -> None:
    """Alive, not ready, and saying so: a probe must not kill a rebuild that takes minutes."""
    await fill(js, 20_000)
    port = free_port()
    env = {
        **os.environ,
        "BOOKING_NATS_URL": nats_server.url,
        "BOOKING_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'booking.db'}",
        "BOOKING_HEALTH_PORT": str(port),
        "BOOKING_HEALTH_HOST": "127.0.0.1",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "booking", env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    seen: list[tuple[int, int, str]] = []
    try:
        # The probes' own timeout in k8s/base (timeoutSeconds: 3).
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=3) as client:
            for _ in range(600):
                try:
                    alive = await client.get("/healthz")
                    ready = await client.get("/readyz")
                except httpx.ConnectError:  # not listening yet
                    await asyncio.sleep(0.05)
                    continue
                seen.append((alive.status_code, ready.status_code, ready.text))
                if ready.status_code == 200:
                    break
                await asyncio.sleep(0.05)
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 15)
    rebuilding = [s for s in seen if "rebuilding its database by replay" in s[2]]
    assert rebuilding, f"no probe saw the rebuild: {seen[:3]}"
    assert all(alive == 200 and ready == 503 for alive, ready, _ in rebuilding)
    assert seen[-1][:2] == (200, 200), "never ready after the rebuild"


async def test_a_rebuild_gives_back_the_resource_and_every_way_a_booking_ended(
    nc: NATS, js: JetStreamContext, database_url: str
) -> None:
    """Sold out, timed out, and cancelled by its user after it was CONFIRMED: each as it ended."""
    await ensure_stream(js, BOOKING)
    at = to_timestamp(now_us())
    facts: list[tuple[object, str]] = []
    for bid in ("b-sold", "b-late", "b-user"):
        created = events_pb2.BookingCreated(
            booking_id=bid,
            user_id="u1",
            amount_cents=1000,
            currency="EUR",
            created_at=at,
            resource_id="room-12",
            quantity=2,
        )
        facts.append((created, f"wf-{bid}"))
    facts += [
        (
            events_pb2.BookingCancelled(
                booking_id="b-sold", reason="sold_out", cancelled_at=at, resource_id="room-12"
            ),
            "wf-b-sold",
        ),
        (
            events_pb2.BookingCancelled(
                booking_id="b-late", reason="payment_timeout", cancelled_at=at, resource_id="room-12"
            ),
            "wf-b-late",
        ),
        (events_pb2.BookingConfirmed(booking_id="b-user", payment_id="p1", confirmed_at=at), "wf-b-user"),
        (
            events_pb2.BookingCancelled(
                booking_id="b-user",
                reason="cancelled_by_user",
                cancelled_at=at,
                payment_id="p1",
                resource_id="room-12",
            ),
            "wf-b-user",
        ),
    ]
    for fact, workflow in facts:
        subject = {
            "BookingCreated": "booking.created",
            "BookingConfirmed": "booking.confirmed",
            "BookingCancelled": "booking.cancelled",
        }[type(fact).__name__]
        env = Envelope.wrap(fact, source="booking", subject=subject, correlation_id=workflow)  # type: ignore[arg-type]
        await js.publish(env.subject, env.data, headers=env.headers())
    engine = await open_engine(database_url)
    try:
        report = await recover_if_lost(nc, js, engine, RECOVERY, service="booking")
        assert report is not None and report.facts == len(facts)
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(
                        bookings.c.booking_id,
                        bookings.c.status,
                        bookings.c.payment_id,
                        bookings.c.cancellation_reason,
                        bookings.c.resource_id,
                        bookings.c.quantity,
                    ).order_by(bookings.c.booking_id)
                )
            ).all()
    finally:
        await engine.dispose()
    assert [tuple(r) for r in rows] == [
        ("b-late", "CANCELLED", "", "payment_timeout", "room-12", 2),
        ("b-sold", "CANCELLED", "", "sold_out", "room-12", 2),
        ("b-user", "CANCELLED", "p1", "cancelled_by_user", "room-12", 2),
    ]
