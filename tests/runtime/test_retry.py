"""Retries with delayed naks, then the dead-letter stream; other events are never held back."""

from __future__ import annotations

import itertools

from nats.js import JetStreamContext

from choreo.runtime import Runtime
from tests.runtime.conftest import MakeRuntime
from tests.runtime.harness import (
    DURABLE,
    Probe,
    consumer_for,
    consumer_settled,
    dlq_messages,
    effects,
    envelope_for,
    running,
)
from tests.streams import BOOKING_STREAM, DLQ_STREAM
from tests.support import eventually, publish, stream_count


async def test_failing_handler_is_retried_with_delay_then_succeeds(
    make_runtime: MakeRuntime, js: JetStreamContext, probe: Probe
) -> None:
    backoff = 0.4
    rt = await make_runtime(max_deliveries=5, retry_backoff_seconds=backoff, retry_backoff_max_seconds=5.0)
    probe.fail_times["b-1"] = 2
    consumer = consumer_for(rt, probe.routes())
    async with running(consumer):
        await publish(js, envelope_for("b-1"))
        await eventually(lambda: consumer.processed == 1, timeout=6.0, message="success after retries")

    calls = probe.calls_for("b-1")
    assert len(calls) == 3, "one handler call per delivery: two failures, then the success"
    gaps = [later - earlier for earlier, later in itertools.pairwise(calls)]
    # Delayed naks: 0.4 s after the first failure, 0.8 s after the second (not redelivered at once).
    assert gaps[0] >= backoff * 0.8, gaps
    assert gaps[1] >= 2 * backoff * 0.8, gaps
    assert len(await effects(rt.engine)) == 1
    assert await stream_count(js, DLQ_STREAM) == 0
    assert await consumer_settled(js, BOOKING_STREAM, DURABLE)


async def test_always_failing_event_is_dead_lettered_while_others_flow(
    make_runtime: MakeRuntime, js: JetStreamContext, probe: Probe
) -> None:
    rt = await make_runtime(max_deliveries=3, retry_backoff_seconds=0.5, retry_backoff_max_seconds=5.0)
    probe.always_fail.add("bad")
    consumer = consumer_for(rt, probe.routes())
    bad = envelope_for("bad", correlation_id="wf-bad", causation_id="cmd-bad")
    async with running(consumer):
        bad_seq = await publish(js, bad)
        await eventually(lambda: len(probe.calls_for("bad")) >= 1, message="first failure")
        for i in range(5):
            await publish(js, envelope_for(f"good-{i}"))
        await eventually(lambda: consumer.processed == 5, message="later events handled")
        # The good events went through while the bad one was still waiting for its retry.
        assert await stream_count(js, DLQ_STREAM) == 0
        assert len(probe.calls_for("bad")) < 3
        await eventually(lambda: stream_count(js, DLQ_STREAM), timeout=5.0, message="dead letter")
        await eventually(lambda: consumer_settled(js, BOOKING_STREAM, DURABLE), message="bad one terminated")

    assert len(probe.calls_for("bad")) == 3, "exactly max_deliveries attempts"
    assert sorted(e["booking_id"] for e in await effects(rt.engine)) == [f"good-{i}" for i in range(5)]
    [dead] = await dlq_messages(js)
    assert dead.subject == f"dlq.booking.{DURABLE}"
    assert dead.data == bad.data
    headers = dead.headers or {}
    for name, value in bad.headers().items():
        copied = f"choreo-dlq-original-{name}" if name == "Nats-Msg-Id" else name
        assert headers[copied] == value, name
    assert headers["choreo-dlq-subject"] == "booking.created"
    assert headers["choreo-dlq-stream"] == BOOKING_STREAM
    assert headers["choreo-dlq-sequence"] == str(bad_seq)
    assert headers["choreo-dlq-consumer"] == DURABLE
    assert headers["choreo-dlq-deliveries"] == "3"
    assert "Boom" in headers["choreo-dlq-error"] and "always failing bad" in headers["choreo-dlq-error"]
    assert consumer.dead_lettered == 1


async def test_hand_backs_are_not_attempts(rt: Runtime, js: JetStreamContext, probe: Probe) -> None:
    """Deliveries that never reached the handler (naks on stop, a crashed batch-mate) do not count."""
    await publish(js, envelope_for("handed-back"))
    # Delivered twice the retry limit without ever running, as hand-backs on stop would do.
    psub = await js.pull_subscribe("booking.created", durable=DURABLE, stream=BOOKING_STREAM)
    for _ in range(rt.settings.max_deliveries * 2):
        [msg] = await psub.fetch(1, timeout=2)
        await msg.nak()
    await psub.unsubscribe()

    consumer = consumer_for(rt, probe.routes())
    async with running(consumer):
        await eventually(lambda: consumer.processed == 1, message="the fact handled")
    assert len(probe.calls_for("handed-back")) == 1
    assert [e["booking_id"] for e in await effects(rt.engine)] == ["handed-back"]
    assert await stream_count(js, DLQ_STREAM) == 0
