"""The booking service in-process against a real nats-server, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from booking.build import build
from booking.create import existing_by_key_query
from booking.settings import BookingSettings
from booking.tables import bookings
from choreo.booking.v1 import commands_pb2, events_pb2
from choreo.bus import ensure_stream
from choreo.db import create_tables, make_engine
from choreo.envelope import H_CORRELATION, H_ID, Envelope
from choreo.payment.v1 import events_pb2 as payment_events
from choreo.sealing import TokenOpener, parse_private_keys
from choreo.service import Service
from choreoctl.stack.natsserver import NatsServer
from tests.streams import CMD_CREATE_BOOKING, PAYMENT
from tests.support import TOKEN_PRIVATE_KEY, eventually, publish, running, stream_count, stream_envelopes

Reply = commands_pb2.CreateBookingReply


@pytest.fixture(autouse=True)
async def payment_stream(js: JetStreamContext) -> None:
    """The stream the payment service would own: the booking service only consumes it."""
    await ensure_stream(js, PAYMENT)


def settings(nats_server: NatsServer, database_url: str) -> BookingSettings:
    return BookingSettings(
        nats_url=nats_server.url,
        database_url=database_url,
        health_port=0,
        max_deliveries=2,
        retry_backoff_seconds=0.05,
        log_format="text",
    )


async def create(nc: NATS, *, correlation: str = "corr-1", **fields: object) -> Reply:
    command = commands_pb2.CreateBookingCommand(
        **{"user_id": "u1", "amount_cents": 1200, "currency": "USD", "payment_token": "tok_visa", **fields}
    )
    msg = await nc.request(
        CMD_CREATE_BOOKING,
        command.SerializeToString(),
        timeout=5,
        headers={H_CORRELATION: correlation, H_ID: f"cmd-{correlation}"},
    )
    return Reply.FromString(msg.data)


async def booking_count(service: Service) -> int:
    assert service.engine is not None
    async with service.engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(bookings))).scalar_one())


async def test_create_saves_pending_and_publishes_booking_created(
    nats_server: NatsServer, database_url: str, nc: NATS, js: JetStreamContext
) -> None:
    async with running(build(settings(nats_server, database_url))):
        reply = await create(nc, correlation="wf-42")
        assert reply.WhichOneof("result") == "booking"
        assert reply.booking.state == commands_pb2.BOOKING_STATE_PENDING
        assert reply.booking.correlation_id == "wf-42"
        await eventually(lambda: stream_count(js, "BOOKING"))
        [fact] = await stream_envelopes(js, "BOOKING")
    assert fact.type == "choreo.booking.v1.BookingCreated"
    assert fact.correlation_id == "wf-42"
    assert fact.causation_id == "cmd-wf-42"
    assert fact.source == "booking"
    created = fact.decode(events_pb2.BookingCreated)
    assert created.booking_id == reply.booking.booking_id
    assert (created.amount_cents, created.currency) == (1200, "USD")
    # Sealed to payment's key (tests/booking/test_sealed_token.py): the plaintext field stays empty.
    assert created.payment_token == ""
    assert (
        TokenOpener(parse_private_keys(TOKEN_PRIVATE_KEY)).open(
            created.sealed_payment_token, bound_to=created.booking_id
        )
        == "tok_visa"
    )


async def test_the_email_travels_in_booking_created_and_a_malformed_one_is_refused(
    nats_server: NatsServer, database_url: str, nc: NATS, js: JetStreamContext
) -> None:
    async with running(build(settings(nats_server, database_url))) as service:
        refused = await create(nc, email="ada@example.com\r\nBcc: x@example.com")
        assert refused.error.code == commands_pb2.COMMAND_ERROR_CODE_INVALID_ARGUMENT
        assert refused.error.field == "email"
        assert await booking_count(service) == 0
        reply = await create(nc, email="ada@example.com", idempotency_key="k-mail")
        # A retry with the same key and another address is another request.
        conflict = await create(nc, email="bob@example.com", idempotency_key="k-mail")
        assert conflict.error.code == commands_pb2.COMMAND_ERROR_CODE_IDEMPOTENCY_CONFLICT
        await eventually(lambda: stream_count(js, "BOOKING"))
        [fact] = await stream_envelopes(js, "BOOKING")
    created = fact.decode(events_pb2.BookingCreated)
    assert (created.booking_id, created.email) == (reply.booking.booking_id, "ada@example.com")


async def test_invalid_command_names_the_field_and_writes_nothing(
    nats_server: NatsServer, database_url: str, nc: NATS, js: JetStreamContext
) -> None:
    async with running(build(settings(nats_server, database_url))) as service:
        reply = await create(nc, currency="dollars")
        assert reply.error.code == commands_pb2.COMMAND_ERROR_CODE_INVALID_ARGUMENT
        assert reply.error.field == "currency"
        assert await booking_count(service) == 0
    assert await stream_count(js, "BOOKING") == 0


async def test_same_idempotency_key_returns_the_first_booking(
    nats_server: NatsServer, database_url: str, nc: NATS, js: JetStreamContext
) -> None:
    async with running(build(settings(nats_server, database_url))) as service:
        first = await create(nc, idempotency_key="key-1")
        # Concurrent retries land in one batch or several: all must see the same booking.
        again = await asyncio.gather(*(create(nc, idempotency_key="key-1") for _ in range(5)))
        assert {r.booking.booking_id for r in again} == {first.booking.booking_id}
        assert all(r.replayed for r in again)
        other_user = await create(nc, idempotency_key="key-1", user_id="u2")
        assert other_user.booking.booking_id != first.booking.booking_id
        conflict = await create(nc, idempotency_key="key-1", amount_cents=999)
        assert conflict.error.code == commands_pb2.COMMAND_ERROR_CODE_IDEMPOTENCY_CONFLICT
        assert conflict.error.field == "idempotency_key"
        assert await booking_count(service) == 2
        await eventually(lambda: stream_count(js, "BOOKING"))
    assert await stream_count(js, "BOOKING") == 2


async def test_concurrent_creates_are_group_committed(
    nats_server: NatsServer, database_url: str, nc: NATS, js: JetStreamContext
) -> None:
    async with running(build(settings(nats_server, database_url))) as service:
        replies = await asyncio.gather(*(create(nc, correlation=f"c{i}") for i in range(200)))
        assert len({r.booking.booking_id for r in replies}) == 200
        assert await booking_count(service) == 200
        await eventually(lambda: _at_least(js, "BOOKING", 200))


async def _at_least(js: JetStreamContext, stream: str, n: int) -> bool:
    return await stream_count(js, stream) >= n


async def _status(service: Service, booking_id: str) -> tuple[str, str, str]:
    assert service.engine is not None
    return await booking_status(service.engine, booking_id)


async def booking_status(engine: AsyncEngine, booking_id: str) -> tuple[str, str, str]:
    """A booking's ``(status, payment_id, cancellation_reason)``."""
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                select(bookings.c.status, bookings.c.payment_id, bookings.c.cancellation_reason).where(
                    bookings.c.booking_id == booking_id
                )
            )
        ).one()
    return (row.status, row.payment_id, row.cancellation_reason)


def payment_fact(message: object, *, booking: Reply, event_id: str | None = None) -> Envelope:
    subject = (
        "payment.succeeded" if isinstance(message, payment_events.PaymentSucceeded) else "payment.failed"
    )
    return Envelope.wrap(
        message,  # type: ignore[arg-type]
        source="payment",
        subject=subject,
        correlation_id=booking.booking.correlation_id,
        causation_id="created-id",
        event_id=event_id,
    )


@pytest.mark.parametrize(
    ("fact", "status", "emitted"),
    [
        (
            payment_events.PaymentSucceeded(payment_id="pay_1"),
            "CONFIRMED",
            "choreo.booking.v1.BookingConfirmed",
        ),
        (
            payment_events.PaymentFailed(payment_id="pay_1", reason="card_declined"),
            "CANCELLED",
            "choreo.booking.v1.BookingCancelled",
        ),
    ],
)
async def test_payment_outcome_settles_the_booking_once(
    nats_server: NatsServer,
    database_url: str,
    nc: NATS,
    js: JetStreamContext,
    fact: object,
    status: str,
    emitted: str,
) -> None:
    async with running(build(settings(nats_server, database_url))) as service:
        reply = await create(nc, correlation="wf-7")
        fact.booking_id = reply.booking.booking_id  # type: ignore[attr-defined]
        fact.amount_cents, fact.currency = 1200, "USD"  # type: ignore[attr-defined]
        env = payment_fact(fact, booking=reply)
        await publish(js, env)
        # The same fact again, past JetStream's de-duplication (another Nats-Msg-Id): the inbox
        # must still give it a single effect.
        await publish(js, env, msg_id="other-id")
        await eventually(lambda: _at_least(js, "BOOKING", 2))
        assert (await _status(service, reply.booking.booking_id))[0] == status
        await asyncio.sleep(0.3)  # give a wrong second effect the chance to show up
        facts = await stream_envelopes(js, "BOOKING")
    assert [f.type for f in facts] == ["choreo.booking.v1.BookingCreated", emitted]
    outcome = facts[1]
    assert outcome.correlation_id == "wf-7"
    assert outcome.causation_id == env.id
    if status == "CANCELLED":
        cancelled = outcome.decode(events_pb2.BookingCancelled)
        assert cancelled.reason == "card_declined"


async def test_a_repeated_outcome_from_the_same_payment_is_a_no_op(
    nats_server: NatsServer, database_url: str, nc: NATS, js: JetStreamContext
) -> None:
    """A copy of the fact that settled the booking (another event id: past the inbox) changes nothing."""
    async with running(build(settings(nats_server, database_url))) as service:
        reply = await create(nc)
        bid = reply.booking.booking_id
        paid = payment_events.PaymentSucceeded(
            payment_id="p1", booking_id=bid, amount_cents=1200, currency="USD"
        )
        await publish(js, payment_fact(paid, booking=reply))
        await eventually(lambda: _at_least(js, "BOOKING", 2))
        await publish(js, payment_fact(paid, booking=reply))
        await asyncio.sleep(0.5)
        assert await _status(service, bid) == ("CONFIRMED", "p1", "")
    assert await stream_count(js, "BOOKING") == 2
    assert await stream_count(js, "DLQ") == 0


async def test_payment_for_unknown_booking_is_dead_lettered_at_once(
    nats_server: NatsServer, database_url: str, nc: NATS, js: JetStreamContext
) -> None:
    async with running(build(settings(nats_server, database_url))):
        fake = Reply(booking=commands_pb2.BookingRecord(correlation_id="wf-x"))
        await publish(
            js, payment_fact(payment_events.PaymentSucceeded(payment_id="p", booking_id="nope"), booking=fake)
        )
        await eventually(lambda: stream_count(js, "DLQ"), timeout=10)
        dead = await js.get_msg("DLQ", 1)
    assert dead.headers is not None
    assert dead.headers["choreo-dlq-consumer"] == "booking"
    assert "UnknownBookingError" in dead.headers["choreo-dlq-error"]
    assert dead.headers["choreo-dlq-error"].startswith("permanent failure")
    # Permanent: no retry can help, so the first delivery is the last.
    assert dead.headers["choreo-dlq-deliveries"] == "1"
    assert dead.headers["choreo-dlq-subject"] == "payment.succeeded"


async def test_the_idempotency_key_lookup_uses_the_unique_index(tmp_path: Path) -> None:
    """Every create carries a key now (the gateway sends its own): a batch's lookup must not scan."""
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'plan.db'}")
    try:
        await create_tables(engine, [bookings])
        query = existing_by_key_query([("u1", "k1"), ("u2", "k2")])
        async with engine.connect() as conn:
            compiled = str(query.compile(engine.sync_engine, compile_kwargs={"literal_binds": True}))
            plan = [tuple(r) for r in await conn.execute(text("EXPLAIN QUERY PLAN " + compiled))]
    finally:
        await engine.dispose()
    assert any("USING INDEX ux_bookings_idempotency" in str(step) for step in plan), plan


async def test_an_unavailable_database_answers_unavailable_without_its_sql(
    nats_server: NatsServer, tmp_path: Path, nc: NATS
) -> None:
    """The database refusing connections: the client is told to retry, and nothing leaks."""
    import asyncpg

    from tests.conftest import PG_URL, make_database_url

    urls = make_database_url("postgres", tmp_path)
    url = await anext(urls)
    name = url.rsplit("/", 1)[1]
    admin = await asyncpg.connect(PG_URL)
    try:
        async with running(build(settings(nats_server, url))):
            await admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
            )
            refused = await create(nc, correlation="wf-down", idempotency_key="k-down")
            await admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
            retried = await create(nc, correlation="wf-down", idempotency_key="k-down")
    finally:
        await admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
        await admin.close()
        with pytest.raises(StopAsyncIteration):
            await anext(urls)
    assert refused.WhichOneof("result") == "error"
    assert refused.error.code == commands_pb2.COMMAND_ERROR_CODE_UNAVAILABLE
    assert refused.error.message == "the booking database is unavailable; the booking was not created"
    assert retried.WhichOneof("result") == "booking"
