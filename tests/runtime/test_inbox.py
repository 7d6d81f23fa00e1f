"""Duplicates have their effect once: JetStream de-duplication and the inbox."""

from __future__ import annotations

import pytest
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from choreo.bus import ensure_stream
from choreo.runtime import Runtime
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
from tests.streams import BOOKING, BOOKING_STREAM, PAYMENT_STREAM
from tests.support import eventually, publish, stream_count


async def test_jetstream_drops_a_republished_msg_id(js: JetStreamContext) -> None:
    await ensure_stream(js, BOOKING)
    env = envelope_for("b-1")
    first = await js.publish(env.subject, env.data, headers=env.headers())
    again = await js.publish(env.subject, env.data, headers=env.headers())
    assert not first.duplicate
    assert again.duplicate
    assert again.seq == first.seq
    assert await stream_count(js, BOOKING_STREAM) == 1


async def test_same_event_under_another_msg_id_has_one_effect(
    rt: Runtime, js: JetStreamContext, probe: Probe
) -> None:
    env = envelope_for("b-1")
    await publish(js, env)
    # The same fact (same ce-id) re-published outside JetStream's de-duplication.
    await publish(js, env, msg_id="another-msg-id")
    other = envelope_for("b-2")
    await publish(js, other)
    assert await stream_count(js, BOOKING_STREAM) == 3

    consumer = consumer_for(rt, probe.routes())
    async with running(consumer, rt.relay):
        await eventually(lambda: consumer_settled(js, BOOKING_STREAM, DURABLE), message="all acked")
        await eventually(lambda: outbox_empty(rt.engine), message="outbox drained")

    assert sorted(e["booking_id"] for e in await effects(rt.engine)) == ["b-1", "b-2"]
    assert consumer.processed == 3  # the duplicate was acknowledged, not left to redeliver
    emitted = await stream_messages(js, PAYMENT_STREAM)
    assert len(emitted) == 2


async def test_same_event_in_separate_batches_has_one_effect(
    rt: Runtime, js: JetStreamContext, probe: Probe
) -> None:
    env = envelope_for("b-1")
    consumer = consumer_for(rt, probe.routes())
    async with running(consumer, rt.relay):
        await publish(js, env)
        await eventually(lambda: len(probe.calls) == 1, message="first copy handled")
        await eventually(lambda: consumer_settled(js, BOOKING_STREAM, DURABLE), message="first copy acked")
        await publish(js, env, msg_id="republished")
        await eventually(lambda: consumer.processed == 2, message="second copy acknowledged")
    assert len(probe.calls) == 1, "the inbox skips the handler for a known event"
    assert len(await effects(rt.engine)) == 1


async def test_redelivery_after_commit_before_ack_has_one_effect(
    rt: Runtime, js: JetStreamContext, probe: Probe, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The handler commits, the ack never reaches the server, the consumer restarts.

    JetStream redelivers after ack_wait; the inbox recognises the event, so the
    handler does not run again and the event is acknowledged.
    """
    lost: list[str] = []

    async def lost_ack(msg: Msg) -> None:
        lost.append(msg.subject)

    ack_wait = 1.0
    await publish(js, envelope_for("b-1"))

    first = consumer_for(rt, probe.routes(), ack_wait_seconds=ack_wait)
    with monkeypatch.context() as patch:
        patch.setattr(Msg, "ack", lost_ack)
        async with running(first):
            await eventually(lambda: lost == ["booking.created"], message="commit, then a lost ack")
    assert len(await effects(rt.engine)) == 1
    info = await js.consumer_info(BOOKING_STREAM, DURABLE)
    assert info.num_ack_pending == 1, "the server never saw the ack"

    restarted = consumer_for(rt, probe.routes(), ack_wait_seconds=ack_wait)
    async with running(restarted, rt.relay):
        await eventually(lambda: restarted.processed == 1, timeout=ack_wait + 4, message="redelivery acked")
        await eventually(lambda: consumer_settled(js, BOOKING_STREAM, DURABLE), message="nothing pending")
        await eventually(lambda: outbox_empty(rt.engine), message="outbox drained")

    info = await js.consumer_info(BOOKING_STREAM, DURABLE)
    assert info.delivered.stream_seq == 1
    assert info.delivered.consumer_seq == 2, "the event was delivered twice"
    assert len(probe.calls) == 1, "the inbox skipped the handler on redelivery"
    assert len(await effects(rt.engine)) == 1
    assert len(await stream_messages(js, PAYMENT_STREAM)) == 1
