"""Service lifecycle: a graceful stop finishes the batch in hand and publishes its facts."""

from __future__ import annotations

import asyncio

import pytest
from nats.js import JetStreamContext
from sqlalchemy.ext.asyncio import AsyncEngine

from choreo.runtime import Runtime
from choreo.subjects import BOOKING_STREAM, PAYMENT_STREAM
from tests.runtime.harness import (
    DURABLE,
    Probe,
    consumer_for,
    consumer_settled,
    effects,
    envelope_for,
    outbox_size,
    publish,
    stream_messages,
    wait_until,
)


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
    await wait_until(lambda: len(probe.prepare_calls) == 5, message="batch in flight")
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
