"""Emitted facts carry the workflow's correlation id and their cause's ce-id, automatically."""

from __future__ import annotations

from nats.js import JetStreamContext

from choreo.envelope import Envelope
from choreo.payment.v1 import events_pb2 as payment_events
from choreo.runtime import Runtime
from tests.runtime.harness import (
    SERVICE,
    Probe,
    consumer_for,
    effects,
    envelope_for,
    outbox_empty,
    publish_raw,
    running,
    stream_messages,
)
from tests.streams import PAYMENT_STREAM
from tests.support import eventually, publish


async def test_emitted_events_carry_correlation_and_causation(
    rt: Runtime, js: JetStreamContext, probe: Probe
) -> None:
    incoming = envelope_for(
        "b-1", event_id="evt-booking-created-1", correlation_id="wf-7", causation_id="cmd-1"
    )
    # An event published without a correlation id starts its own workflow, named after itself.
    orphan = envelope_for("b-2", event_id="evt-orphan")
    orphan_headers = {k: v for k, v in orphan.headers().items() if k != "ce-correlationid"}

    consumer = consumer_for(rt, probe.routes())
    async with running(consumer, rt.relay):
        await publish(js, incoming)
        await publish_raw(js, orphan.subject, orphan.data, orphan_headers)
        await eventually(lambda: consumer.processed == 2, message="both handled")
        await eventually(lambda: outbox_empty(rt.engine), message="emitted events published")

    emitted = {}
    for msg in await stream_messages(js, PAYMENT_STREAM):
        env = Envelope.from_headers(msg.subject or "", msg.headers, msg.data or b"")
        emitted[env.decode(payment_events.PaymentSucceeded).booking_id] = env

    first = emitted["b-1"]
    assert first.correlation_id == "wf-7"
    assert first.causation_id == "evt-booking-created-1"
    assert first.source == SERVICE
    assert first.type == "choreo.payment.v1.PaymentSucceeded"
    assert first.subject == "payment.succeeded"
    assert first.id not in ("evt-booking-created-1", "")

    second = emitted["b-2"]
    assert second.correlation_id == "evt-orphan"
    assert second.causation_id == "evt-orphan"

    # The handler saw the same correlation ids it stamped.
    by_booking = {e["booking_id"]: e["correlation_id"] for e in await effects(rt.engine)}
    assert by_booking == {"b-1": "wf-7", "b-2": "evt-orphan"}
