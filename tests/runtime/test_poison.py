"""Poison messages go to the DLQ at once; the consumer carries on with the next message."""

from __future__ import annotations

import pytest
from nats.js import JetStreamContext

from choreo.runtime import Runtime
from tests.runtime.harness import (
    DURABLE,
    Probe,
    consumer_for,
    consumer_settled,
    dlq_messages,
    effects,
    envelope_for,
    publish_raw,
    running,
)
from tests.streams import BOOKING_STREAM, DLQ_STREAM
from tests.support import eventually, publish, stream_count

# Field 1 (booking_id, length-delimited) claims 127 bytes but the body ends: not a protobuf message.
TRUNCATED_BODY = b"\x0a\x7fnot protobuf"


CASES = ["garbage-body", "no-headers", "missing-ce-type", "unknown-ce-type", "over-long-id"]


def poison(case: str) -> tuple[bytes, dict[str, str] | None, str]:
    """Body, headers and the expected error of one kind of poison message."""
    env = envelope_for("poison")
    headers = env.headers()
    if case == "garbage-body":
        return TRUNCATED_BODY, headers, "undecodable"
    if case == "no-headers":
        return env.data, None, "missing header(s): ce-id, ce-type, ce-source"
    if case == "missing-ce-type":
        del headers["ce-type"]
        return env.data, headers, "missing header(s): ce-type"
    if case == "over-long-id":
        # Would fit SQLite's inbox but not PostgreSQL's VARCHAR(64): rejected on both, up front.
        headers["ce-id"] = headers["Nats-Msg-Id"] = "x" * 100
        return env.data, headers, "header(s) longer than 64 characters: ce-id"
    assert case == "unknown-ce-type"
    headers["ce-type"] = "choreo.booking.v1.NoSuchEvent"
    return env.data, headers, "unknown event type 'choreo.booking.v1.NoSuchEvent'"


@pytest.mark.parametrize("case", CASES)
async def test_poison_goes_to_dlq_at_once_and_consumer_continues(
    case: str, rt: Runtime, js: JetStreamContext, probe: Probe
) -> None:
    body, headers, error = poison(case)
    poison_seq = await publish_raw(js, "booking.created", body, headers)
    await publish(js, envelope_for("after"))

    consumer = consumer_for(rt, probe.routes())
    async with running(consumer):
        await eventually(lambda: consumer.processed == 1, message="the next event handled")
        await eventually(lambda: stream_count(js, DLQ_STREAM), message="dead letter")
        await eventually(lambda: consumer_settled(js, BOOKING_STREAM, DURABLE), message="poison terminated")

    assert [c[0] for c in probe.calls] == ["after"], "the handler never sees poison"
    assert [e["booking_id"] for e in await effects(rt.engine)] == ["after"]
    [dead] = await dlq_messages(js)
    dead_headers = dead.headers or {}
    assert dead.data == body
    assert dead_headers["choreo-dlq-deliveries"] == "1", "no retries for poison"
    assert dead_headers["choreo-dlq-sequence"] == str(poison_seq)
    assert dead_headers["choreo-dlq-subject"] == "booking.created"
    assert error in dead_headers["choreo-dlq-error"]
    for name, value in (headers or {}).items():
        copied = f"choreo-dlq-original-{name}" if name == "Nats-Msg-Id" else name
        assert dead_headers[copied] == value, name
    assert consumer.dead_lettered == 1


async def test_poison_with_jetstream_publish_headers_is_dead_lettered(
    rt: Runtime, js: JetStreamContext, probe: Probe
) -> None:
    """``Nats-Expected-*`` headers of the original must not make the DLQ refuse the copy."""
    await publish(js, envelope_for("first"))
    # Valid when published (BOOKING's last sequence is 1); wrong for the DLQ stream, which is empty.
    headers = {"Nats-Expected-Last-Sequence": "1", "Nats-Msg-Id": "poison-1"}
    poison_seq = await publish_raw(js, "booking.created", TRUNCATED_BODY, headers)
    await publish(js, envelope_for("after"))

    consumer = consumer_for(rt, probe.routes())
    async with running(consumer) as tasks:
        await eventually(
            lambda: consumer.processed == 2 or tasks[0].done(), message="events around the poison"
        )
        assert not tasks[0].done(), tasks[0].exception()
        await eventually(lambda: consumer_settled(js, BOOKING_STREAM, DURABLE), message="poison terminated")

    [dead] = await dlq_messages(js)
    dead_headers = dead.headers or {}
    assert dead_headers["choreo-dlq-sequence"] == str(poison_seq)
    assert dead_headers["choreo-dlq-original-Nats-Expected-Last-Sequence"] == "1"
    assert dead_headers["choreo-dlq-original-Nats-Msg-Id"] == "poison-1"
    assert "Nats-Expected-Last-Sequence" not in dead_headers
