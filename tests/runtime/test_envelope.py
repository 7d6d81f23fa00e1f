"""The envelope's CloudEvents headers survive a trip through JetStream and through the outbox."""

from __future__ import annotations

import re
from datetime import datetime

import pytest
from nats.js import JetStreamContext

from choreo.booking.v1 import events_pb2 as booking_events
from choreo.bus import ensure_stream
from choreo.envelope import Envelope, EnvelopeError
from choreo.outbox import add_to_outbox
from choreo.payment.v1 import events_pb2 as payment_events
from choreo.runtime import Runtime
from tests.runtime.harness import SERVICE, envelope_for, stream_messages
from tests.streams import BOOKING, BOOKING_STREAM, PAYMENT_STREAM
from tests.support import publish

RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")


def assert_cloudevent_headers(headers: dict[str, str], env: Envelope) -> None:
    assert headers["ce-specversion"] == "1.0"
    assert headers["ce-id"] == env.id
    assert headers["Nats-Msg-Id"] == env.id
    assert headers["ce-type"] == env.type
    assert headers["ce-source"] == env.source
    assert headers["ce-time"] == env.time
    assert RFC3339_UTC.match(headers["ce-time"]), headers["ce-time"]
    datetime.fromisoformat(headers["ce-time"])
    assert headers["content-type"] == "application/protobuf"
    assert headers["ce-correlationid"] == env.correlation_id


async def test_headers_round_trip_through_jetstream(js: JetStreamContext) -> None:
    await ensure_stream(js, BOOKING)
    env = envelope_for("b-1", correlation_id="wf-42", causation_id="cmd-7")
    assert env.type == "choreo.booking.v1.BookingCreated"

    await publish(js, env)
    [stored] = await stream_messages(js, BOOKING_STREAM)

    assert stored.subject == "booking.created"
    assert stored.headers is not None
    assert_cloudevent_headers(stored.headers, env)
    assert stored.headers["ce-causationid"] == "cmd-7"
    back = Envelope.from_headers(stored.subject, stored.headers, stored.data or b"")
    assert back == env
    assert back.decode(booking_events.BookingCreated).booking_id == "b-1"


def test_no_causation_header_without_a_cause() -> None:
    env = envelope_for("b-1")
    assert "ce-causationid" not in env.headers()


def test_missing_headers_are_rejected() -> None:
    with pytest.raises(EnvelopeError, match="ce-type"):
        Envelope.from_headers("booking.created", {"ce-id": "x", "ce-source": "s"}, b"")
    with pytest.raises(EnvelopeError, match="ce-id"):
        Envelope.from_headers("booking.created", None, b"")


def test_over_long_ids_are_rejected() -> None:
    headers = envelope_for("b-1").headers()
    Envelope.from_headers("booking.created", {**headers, "ce-correlationid": "c" * 64}, b"")
    with pytest.raises(EnvelopeError, match="ce-correlationid"):
        Envelope.from_headers("booking.created", {**headers, "ce-correlationid": "c" * 65}, b"")
    with pytest.raises(EnvelopeError, match="ce-causationid"):
        Envelope.from_headers("booking.created", {**headers, "ce-causationid": "c" * 65}, b"")


def test_event_without_correlation_starts_its_own_workflow() -> None:
    env = Envelope.from_headers("s", {"ce-id": "e-1", "ce-type": "t", "ce-source": "src"}, b"")
    assert env.correlation_id == "e-1"
    assert env.causation_id == ""


async def test_outbox_publishes_the_same_headers(rt: Runtime, js: JetStreamContext) -> None:
    env = Envelope.wrap(
        payment_events.PaymentSucceeded(payment_id="p-1", booking_id="b-1", amount_cents=5, currency="EUR"),
        source=SERVICE,
        subject="payment.succeeded",
        correlation_id="wf-1",
        causation_id="evt-0",
    )
    async with rt.engine.begin() as conn:
        await add_to_outbox(conn, [env])
    assert await rt.relay.publish_pending() == 1

    [stored] = await stream_messages(js, PAYMENT_STREAM)
    assert stored.subject == "payment.succeeded"
    assert stored.headers is not None
    assert_cloudevent_headers(stored.headers, env)
    assert stored.headers["ce-causationid"] == "evt-0"
    assert stored.headers["ce-type"] == "choreo.payment.v1.PaymentSucceeded"
    assert payment_events.PaymentSucceeded.FromString(stored.data or b"").payment_id == "p-1"
