"""Reading facts off the streams: trace entries, booking changes, and poison."""

from __future__ import annotations

from choreo.booking.v1 import events_pb2
from choreo.clock import rfc3339_us as parse_time_us
from choreo.envelope import Envelope
from choreo.payment.v1 import events_pb2 as payment_events
from gateway.projection.facts import Fact, read_fact
from gateway.readmodel.model import Status
from tests.gateway.fakes import ts

STORED_AT = 1_700_000_000_000_000


def read(
    env: Envelope, *, data: bytes | None = None, headers: dict[str, str] | None = None, seq: int = 7
) -> Fact:
    return read_fact(
        stream="BOOKING" if env.subject.startswith("booking.") else "PAYMENT",
        sequence=seq,
        subject=env.subject,
        headers=env.headers() if headers is None else headers,
        data=env.data if data is None else data,
        stored_at_us=STORED_AT,
    )


def wrap(message: events_pb2.BookingCreated | object, subject: str, **kw: str) -> Envelope:
    return Envelope.wrap(message, source="booking", subject=subject, correlation_id="corr-1", **kw)  # type: ignore[arg-type]


def test_booking_created_fills_the_booking_and_the_trace() -> None:
    env = wrap(
        events_pb2.BookingCreated(
            booking_id="b1", user_id="u1", amount_cents=4200, currency="EUR", created_at=ts(1_000_000)
        ),
        "booking.created",
        causation_id="cmd-1",
    )
    fact = read(env)
    assert fact.error is None
    assert fact.change is not None and fact.trace is not None
    c = fact.change
    assert (c.booking_id, c.user_id, c.amount_cents, c.currency) == ("b1", "u1", 4200, "EUR")
    assert c.status is Status.PENDING and c.created_at_us == 1_000_000 and c.at_us == 1_000_000
    assert c.correlation_id == "corr-1"
    t = fact.trace
    assert (t.event_id, t.event_type, t.source, t.subject, t.stream, t.stream_sequence) == (
        env.id,
        "choreo.booking.v1.BookingCreated",
        "booking",
        "booking.created",
        "BOOKING",
        7,
    )
    assert (t.correlation_id, t.causation_id, t.booking_id) == ("corr-1", "cmd-1", "b1")
    assert t.occurred_at_us == parse_time_us(env.time)


def test_each_outcome_fact_says_what_it_should() -> None:
    confirmed = read(wrap(events_pb2.BookingConfirmed(booking_id="b1", payment_id="p1"), "booking.confirmed"))
    assert confirmed.change is not None
    assert (confirmed.change.status, confirmed.change.payment_id) == (Status.CONFIRMED, "p1")
    cancelled = read(
        wrap(events_pb2.BookingCancelled(booking_id="b1", reason="card_declined"), "booking.cancelled")
    )
    assert cancelled.change is not None
    assert cancelled.change.status is Status.CANCELLED and cancelled.change.reason_is_final
    failed = read(
        wrap(payment_events.PaymentFailed(booking_id="b1", payment_id="p2", reason="x"), "payment.failed")
    )
    assert failed.change is not None and not failed.change.reason_is_final
    assert failed.change.cancellation_reason == "x" and failed.trace is not None
    assert failed.trace.stream == "PAYMENT"
    ok = read(wrap(payment_events.PaymentSucceeded(booking_id="b1", payment_id="p3"), "payment.succeeded"))
    assert ok.change is not None and ok.change.payment_id == "p3" and ok.change.status is Status.PENDING


def test_time_falls_back_to_ce_time_then_to_the_stream() -> None:
    env = wrap(events_pb2.BookingConfirmed(booking_id="b1"), "booking.confirmed")
    fact = read(env)
    assert fact.change is not None and fact.change.at_us == parse_time_us(env.time)
    no_time = {k: v for k, v in env.headers().items() if k != "ce-time"}
    fact = read(env, headers=no_time)
    assert fact.change is not None and fact.change.at_us == STORED_AT


def test_a_message_without_event_headers_is_poison_and_not_traced() -> None:
    env = wrap(events_pb2.BookingConfirmed(booking_id="b1"), "booking.confirmed")
    fact = read(env, headers={})
    assert fact.trace is None and fact.change is None
    assert fact.error is not None and "ce-id" in fact.error


def test_a_garbage_body_is_poison_but_still_traced() -> None:
    env = wrap(events_pb2.BookingCreated(booking_id="b1"), "booking.created")
    fact = read(env, data=b"\xff\xff\xff not protobuf")
    assert fact.change is None and fact.error is not None and "undecodable" in fact.error
    assert fact.trace is not None and fact.trace.event_id == env.id and fact.trace.booking_id == ""


def test_an_unknown_type_of_a_known_contract_is_poison() -> None:
    env = Envelope(
        id="e1",
        type="choreo.booking.v1.BookingTeleported",
        source="booking",
        subject="booking.teleported",
        data=b"",
        correlation_id="corr-1",
    )
    fact = read(env)
    assert fact.error is not None and "unknown type" in fact.error
    assert fact.trace is not None and fact.change is None


def test_a_type_on_the_wrong_subject_is_poison() -> None:
    env = wrap(events_pb2.BookingConfirmed(booking_id="b1"), "booking.created")
    fact = read(env)
    assert fact.error is not None and "expected choreo.booking.v1.BookingCreated" in fact.error
    assert fact.change is None


def test_a_booking_fact_on_another_services_subject_is_poison() -> None:
    """A service allowed to publish only on its own stream cannot move a booking from there."""
    forged = wrap(events_pb2.BookingConfirmed(booking_id="victim", payment_id="p"), "notification.sent")
    fact = read_fact(
        stream="NOTIFICATION",
        sequence=1,
        subject=forged.subject,
        headers=forged.headers(),
        data=forged.data,
        stored_at_us=1,
    )
    assert fact.error is not None and "its contract's subject is booking.confirmed" in fact.error
    assert fact.change is None


def test_another_services_fact_is_traced_only() -> None:
    env = Envelope(
        id="e2",
        type="choreo.notification.v1.EmailSent",
        source="notification",
        subject="notification.sent",
        data=b"\x0a\x02hi",
        correlation_id="corr-1",
        causation_id="e1",
    )
    fact = read_fact(
        stream="NOTIFICATION",
        sequence=1,
        subject=env.subject,
        headers=env.headers(),
        data=env.data,
        stored_at_us=1,
    )
    assert fact.error is None and fact.change is None
    assert fact.trace is not None and fact.trace.stream == "NOTIFICATION" and fact.trace.causation_id == "e1"


def test_a_fact_without_booking_id_or_with_overlong_ids_is_poison() -> None:
    assert read(wrap(events_pb2.BookingConfirmed(booking_id=""), "booking.confirmed")).error is not None
    long_id = read(wrap(events_pb2.BookingConfirmed(booking_id="b" * 129), "booking.confirmed"))
    assert long_id.error is not None and long_id.change is None and long_id.trace is not None
    env = wrap(events_pb2.BookingConfirmed(booking_id="b1"), "booking.confirmed")
    headers = {**env.headers(), "ce-correlationid": "c" * 200}
    assert read(env, headers=headers).trace is None


def test_parse_time() -> None:
    assert parse_time_us("1970-01-01T00:00:01.000002Z") == 1_000_002
    assert parse_time_us("1970-01-01T01:00:01+01:00") == 1_000_000
    assert parse_time_us("2024-01-01T00:00:00.123456789Z") is not None
    assert parse_time_us("yesterday") is None
    assert parse_time_us("2024-01-01T00:00:00") is None
    assert parse_time_us("") is None
