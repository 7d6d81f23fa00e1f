"""JetStream limits on every stream; a full stream refuses facts, the outbox keeps them and alerts.

Attack (issue 9): streams had no retention limit, so a flood of facts could fill
JetStream's storage, and a limit with ``discard=old`` would silently drop the
history a rebuild by replay reads.
"""

from __future__ import annotations

import asyncio
import logging

import pytest
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, StreamConfig

from choreo.bus import DLQ_LIMITS, StreamLimits, ensure_stream, stream_config
from choreo.outbox import OLDEST_GAUGE, REFUSED_COUNTER
from choreo.settings import DEFAULT_STREAM_MAX_BYTES, DEFAULT_STREAM_MAX_MSG_SIZE
from choreoctl.stack.natsserver import NatsServer
from tests.runtime.harness import (
    close_runtime,
    open_test_runtime,
    outbox_empty,
    outbox_size,
    running,
    settings_for,
)
from tests.runtime.test_outbox import commit_events, payment_event, published_ids
from tests.streams import BOOKING, BOOKING_STREAM, DLQ, DLQ_STREAM, PAYMENT, PAYMENT_STREAM
from tests.support import eventually, publish, stream_count

#: Room for a few of the test's facts (about 300 bytes each with their headers).
TINY = 2_000


async def test_every_stream_gets_limits_and_refuses_when_full(js: JetStreamContext) -> None:
    limits = StreamLimits(max_bytes=5 * 1024 * 1024, max_msg_size=64 * 1024, max_age_seconds=3600)
    await ensure_stream(js, BOOKING, limits=limits)
    await ensure_stream(js, DLQ, limits=limits)  # the DLQ keeps its own, whoever provisions it
    booking = (await js.stream_info(BOOKING_STREAM)).config
    dlq = (await js.stream_info(DLQ_STREAM)).config
    assert (booking.max_bytes, booking.max_msg_size, booking.max_age) == (5 * 1024 * 1024, 64 * 1024, 3600)
    assert booking.discard == DiscardPolicy.NEW
    assert (dlq.max_bytes, dlq.max_msg_size) == (DLQ_LIMITS.max_bytes, DLQ_LIMITS.max_msg_size)
    assert dlq.discard == DiscardPolicy.NEW
    default = stream_config(PAYMENT)
    assert (default.max_bytes, default.max_msg_size, default.max_age) == (
        DEFAULT_STREAM_MAX_BYTES,
        DEFAULT_STREAM_MAX_MSG_SIZE,
        0.0,
    )


async def test_an_existing_stream_without_limits_is_updated(js: JetStreamContext) -> None:
    """A stream made by an older release (no limits, discard=old) gets the limits at the next start."""
    await js.add_stream(StreamConfig(name=PAYMENT_STREAM, subjects=["payment.>"], discard=DiscardPolicy.OLD))
    await ensure_stream(js, PAYMENT, limits=StreamLimits(max_bytes=10_000_000, max_msg_size=4096))
    config = (await js.stream_info(PAYMENT_STREAM)).config
    assert (config.max_bytes, config.max_msg_size, config.discard) == (10_000_000, 4096, DiscardPolicy.NEW)


async def test_a_limit_below_what_the_stream_holds_is_not_applied(
    js: JetStreamContext, caplog: pytest.LogCaptureFixture
) -> None:
    """Lowering max_bytes under the stream's size would delete its oldest facts: refused, with an error."""
    await ensure_stream(js, PAYMENT, limits=StreamLimits(max_bytes=1_000_000))
    for i in range(20):
        env = payment_event(i)
        await publish(js, env)
    with caplog.at_level(logging.ERROR, logger="choreo.bus"):
        await ensure_stream(js, PAYMENT, limits=StreamLimits(max_bytes=TINY))
    info = await js.stream_info(PAYMENT_STREAM)
    assert info.config.max_bytes == 1_000_000
    assert info.state.messages == 20
    assert any("keeping its limit" in r.getMessage() for r in caplog.records)


async def test_a_full_stream_keeps_the_facts_in_the_outbox_alerts_and_catches_up_in_order(
    nats_server: NatsServer, database_url: str, js: JetStreamContext, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="choreo.outbox")
    settings = settings_for(nats_server.url, database_url, stream_max_bytes=TINY)
    rt = await open_test_runtime(settings)
    envs = [payment_event(i) for i in range(20)]
    try:
        async with running(rt.relay):
            await commit_events(rt, envs)
            rt.relay.notify()
            await eventually(
                lambda: rt.stages.counter(REFUSED_COUNTER, stream=PAYMENT_STREAM) > 0, message="a refusal"
            )
            stored = await stream_count(js, PAYMENT_STREAM)
            assert 0 < stored < len(envs)
            assert (await js.stream_info(PAYMENT_STREAM)).state.bytes <= TINY
            # Nothing lost, nothing parked: every refused fact waits in the outbox.
            assert await outbox_size(rt.engine) == len(envs) - stored
            assert rt.relay.parked_rows == 0
            await eventually(lambda: (rt.stages.gauge(OLDEST_GAUGE) or 0) > 0, message="the age gauge")
            await asyncio.sleep(1.0)  # a few more refused retries
            metrics = rt.stages.render()
            assert f'choreo_{REFUSED_COUNTER}{{service="rt-payment",stream="PAYMENT"}}' in metrics
            assert f'choreo_{OLDEST_GAUGE}{{service="rt-payment"}}' in metrics
            assert rt.stages.counter(REFUSED_COUNTER, stream=PAYMENT_STREAM) >= len(envs) - stored
            alerts = [r for r in caplog.records if r.levelname == "ERROR" and "is full" in r.getMessage()]
            assert len(alerts) == 1, "one ERROR per episode, not one per retry"
            assert "stream PAYMENT is full" in alerts[0].getMessage()
            assert await rt.relay.check() is not None  # unready while facts cannot be published

            await ensure_stream(js, PAYMENT, limits=StreamLimits(max_bytes=1_000_000))
            await eventually(lambda: outbox_empty(rt.engine), timeout=20.0, message="the outbox drained")
            await eventually(lambda: rt.stages.gauge(OLDEST_GAUGE) == 0, timeout=5.0, message="age back to 0")
        assert await published_ids(js) == [e.id for e in envs], "all of them, in order"
        assert PAYMENT_STREAM not in rt.relay.full_streams
        assert any("accepts facts again" in r.getMessage() for r in caplog.records)
    finally:
        await close_runtime(rt)
