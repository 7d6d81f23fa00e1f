"""Service lifecycle: a graceful stop finishes the batch in hand and publishes its facts."""

from __future__ import annotations

import asyncio
import time

import pytest
from nats.js import JetStreamContext
from sqlalchemy.ext.asyncio import AsyncEngine

from choreo.outbox import add_to_outbox
from choreo.runtime import Runtime
from choreoctl.stack.natsserver import NatsServer
from tests.runtime.conftest import MakeRuntime
from tests.runtime.harness import (
    DURABLE,
    Probe,
    consumer_for,
    consumer_settled,
    effects,
    envelope_for,
    outbox_size,
    running,
    stream_messages,
)
from tests.streams import BOOKING_STREAM, PAYMENT_STREAM
from tests.support import eventually, publish


async def test_graceful_stop_finishes_in_flight_batch_and_publishes_its_facts(
    rt: Runtime, js: JetStreamContext, probe: Probe, reader: AsyncEngine
) -> None:
    # A slow prepare keeps the batch in flight while stop() is called.
    probe.prepare_delay = 0.5
    envs = [envelope_for(f"b-{i}") for i in range(5)]
    for env in envs:
        await publish(js, env)
    service = rt.service([consumer_for(rt, probe.routes(with_prepare=True))])
    await service.start()
    await eventually(lambda: len(probe.prepare_calls) == 5, message="batch in flight")
    assert probe.calls == [], "nothing committed yet"

    await asyncio.wait_for(service.stop(grace=5.0), 10)

    assert rt.nc.is_closed, "the connection was drained and closed"
    assert sorted(e["booking_id"] for e in await effects(reader)) == [f"b-{i}" for i in range(5)]
    assert await outbox_size(reader) == 0, "committed facts were published before the connection closed"
    emitted = await stream_messages(js, PAYMENT_STREAM)
    assert sorted(m.headers["ce-causationid"] for m in emitted if m.headers) == sorted(e.id for e in envs)
    assert await consumer_settled(js, BOOKING_STREAM, DURABLE), "the batch was acknowledged before draining"


async def test_wait_reraises_a_crashed_component(rt: Runtime) -> None:
    class Crashing:
        async def run(self) -> None:
            raise RuntimeError("component crashed")

        def stop(self) -> None:
            pass

    service = rt.service([Crashing()])
    await service.start()
    with pytest.raises(RuntimeError, match="component crashed"):
        await asyncio.wait_for(service.wait(asyncio.Event()), 5)
    await asyncio.wait_for(service.stop(grace=3.0), 5)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_stop_hands_back_events_it_buffered_but_never_handled(
    make_runtime: MakeRuntime, js: JetStreamContext, probe: Probe
) -> None:
    """A rolling restart must not delay events by ack_wait (30 s by default)."""
    rt = await make_runtime(batch_size=5, ack_wait_seconds=30.0)
    probe.handle_delay = 0.05
    for i in range(20):
        await publish(js, envelope_for(f"b-{i:02d}"))
    first = consumer_for(rt, probe.routes())
    async with running(first):
        await eventually(lambda: len(probe.calls) >= 1, message="first batch in flight")
    assert first.processed < 20, "the first consumer should stop with events still buffered"

    second = consumer_for(rt, probe.routes())
    async with running(second):
        await eventually(
            lambda: first.processed + second.processed >= 20, timeout=5.0, message="the rest, promptly"
        )
    assert len(await effects(rt.engine)) == 20


async def test_stop_during_a_nats_outage_keeps_to_the_grace_period(
    rt: Runtime, js: JetStreamContext, probe: Probe, reader: AsyncEngine, nats_server: NatsServer
) -> None:
    """Committed facts that cannot be published stay in the outbox; stop still returns in time."""
    service = rt.service([consumer_for(rt, probe.routes())])
    await service.start()
    await publish(js, envelope_for("b-1"))
    await eventually(lambda: effects_count(reader, 1), message="event handled")
    nats_server.kill()
    await eventually(lambda: not rt.nc.is_connected, message="outage noticed")
    async with reader.begin() as conn:  # a fact committed during the outage
        await add_to_outbox(conn, [envelope_for("b-2")])

    grace = 2.0
    started = time.monotonic()
    await asyncio.wait_for(service.stop(grace=grace), grace + 5)
    assert time.monotonic() - started < grace + 2.5
    assert await outbox_size(reader) >= 1, "unpublished facts are kept for the next start"


async def effects_count(engine: AsyncEngine, n: int) -> bool:
    return len(await effects(engine)) == n


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_stop_during_a_nats_outage_closes_the_connection(rt: Runtime, nats_server: NatsServer) -> None:
    service = rt.service([])
    await service.start()
    nats_server.kill()
    await eventually(lambda: not rt.nc.is_connected, message="outage noticed")
    await asyncio.wait_for(service.stop(grace=1.0), 6)
    assert rt.nc.is_closed
