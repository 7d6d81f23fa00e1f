"""A running consumer and relay ride out a NATS restart without losing or doubling anything."""

from __future__ import annotations

import asyncio

from nats.js import JetStreamContext

from choreo.runtime import Runtime
from choreoctl.stack.natsserver import NatsServer
from tests.runtime.harness import (
    DURABLE,
    Probe,
    consumer_for,
    consumer_settled,
    effects,
    envelope_for,
    outbox_empty,
    running,
    stream_messages,
)
from tests.streams import BOOKING_STREAM, PAYMENT_STREAM
from tests.support import eventually, publish


async def test_consumer_and_relay_continue_after_nats_restart(
    rt: Runtime, js: JetStreamContext, probe: Probe, nats_server: NatsServer
) -> None:
    consumer = consumer_for(rt, probe.routes())
    async with running(consumer, rt.relay):
        for i in range(5):
            await publish(js, envelope_for(f"before-{i}"))
        await eventually(lambda: consumer.processed == 5, message="first events")
        await eventually(lambda: outbox_empty(rt.engine), message="first facts published")

        nats_server.kill()
        await eventually(lambda: not rt.nc.is_connected, message="outage noticed")
        await asyncio.to_thread(nats_server.restart)
        await eventually(
            lambda: rt.nc.is_connected and js._nc.is_connected, timeout=10, message="reconnected"
        )

        for i in range(5):
            await publish(js, envelope_for(f"after-{i}"))
        # Acks sent just before the kill may be lost with the server's consumer state; the
        # inbox then absorbs the redeliveries, so count effects, not acknowledgements.
        await eventually(lambda: _effect_count(rt, 10), timeout=15, message="events after the restart")
        await eventually(lambda: outbox_empty(rt.engine), timeout=10, message="outbox drained")
        await eventually(lambda: consumer_settled(js, BOOKING_STREAM, DURABLE), message="all acked")

    handled = sorted(e["booking_id"] for e in await effects(rt.engine))
    assert len(probe.calls) == 10, "redelivered events never reached the handler again"
    assert handled == sorted([f"before-{i}" for i in range(5)] + [f"after-{i}" for i in range(5)])
    causes = [m.headers["ce-causationid"] for m in await stream_messages(js, PAYMENT_STREAM) if m.headers]
    assert len(causes) == len(set(causes)) == 10, "each fact published exactly once"


async def _effect_count(rt: Runtime, n: int) -> bool:
    return len(await effects(rt.engine)) == n
