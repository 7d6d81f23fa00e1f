"""The payment service in-process against a real nats-server, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from nats.js import JetStreamContext
from sqlalchemy import func, select

from choreo.booking.v1 import events_pb2 as booking_events
from choreo.bus import ensure_stream
from choreo.envelope import Envelope
from choreo.payment.v1 import events_pb2 as payment_events
from choreo.sealing import TokenSealer, parse_public_key
from choreo.service import Service
from choreoctl.stack.natsserver import NatsServer
from payment.build import build
from payment.settings import PaymentSettings
from payment.simulator import ledger
from payment.tables import payments
from tests.streams import BOOKING
from tests.support import TOKEN_PUBLIC_KEY, eventually, publish, running, stream_count, stream_envelopes

SESSION_SEALER = TokenSealer(parse_public_key(TOKEN_PUBLIC_KEY))


@pytest.fixture(autouse=True)
async def booking_stream(js: JetStreamContext) -> None:
    """The stream the booking service would own: the payment service only consumes it."""
    await ensure_stream(js, BOOKING)


def settings(nats_server: NatsServer, database_url: str, tmp_path: Path, **extra: object) -> PaymentSettings:
    return PaymentSettings(
        nats_url=nats_server.url,
        database_url=database_url,
        provider_ledger_url=f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}",
        health_port=0,
        max_deliveries=3,
        retry_backoff_seconds=0.05,
        log_format="text",
        **extra,  # type: ignore[arg-type]
    )


def booking_created(
    booking_id: str, token: str, correlation: str = "wf-1", *, sealed: bytes | None = None
) -> Envelope:
    """A ``BookingCreated`` as booking publishes it: the token sealed to this session's key."""
    event = booking_events.BookingCreated(
        booking_id=booking_id,
        user_id="u1",
        amount_cents=2500,
        currency="EUR",
        sealed_payment_token=sealed
        if sealed is not None
        else SESSION_SEALER.seal(token, bound_to=booking_id),
    )
    return Envelope.wrap(event, source="booking", subject="booking.created", correlation_id=correlation)


async def _at_least(js: JetStreamContext, stream: str, n: int) -> bool:
    return await stream_count(js, stream) >= n


async def test_each_token_leads_to_its_outcome(
    nats_server: NatsServer, database_url: str, tmp_path: Path, js: JetStreamContext
) -> None:
    tokens = {
        "b-visa": ("tok_visa", ""),
        "b-declined": ("tok_chargeDeclined", "card_declined"),
        "b-funds": ("tok_chargeDeclinedInsufficientFunds", "insufficient_funds"),
        "b-unknown": ("tok_zz9", "invalid_payment_token"),
    }
    async with running(build(settings(nats_server, database_url, tmp_path))):
        causes = {
            bid: await publish_env(js, booking_created(bid, tok, f"wf-{bid}"))
            for bid, (tok, _) in tokens.items()
        }
        await eventually(lambda: _at_least(js, "PAYMENT", 4))
        facts = await stream_envelopes(js, "PAYMENT")
    by_booking = {}
    for fact in facts:
        if fact.type == "choreo.payment.v1.PaymentSucceeded":
            msg = fact.decode(payment_events.PaymentSucceeded)
            by_booking[msg.booking_id] = ("", fact)
            assert (msg.amount_cents, msg.currency) == (2500, "EUR")
        else:
            failed = fact.decode(payment_events.PaymentFailed)
            by_booking[failed.booking_id] = (failed.reason, fact)
    assert {bid: reason for bid, (reason, _) in by_booking.items()} == {b: r for b, (_, r) in tokens.items()}
    for bid, (_, fact) in by_booking.items():
        assert fact.correlation_id == f"wf-{bid}"
        assert fact.causation_id == causes[bid]
        assert fact.source == "payment"


async def publish_env(js: JetStreamContext, env: Envelope) -> str:
    await publish(js, env)
    return env.id


async def count(service: Service, table: object) -> int:
    assert service.engine is not None
    async with service.engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())  # type: ignore[arg-type]


async def test_redelivered_booking_is_charged_and_paid_once(
    nats_server: NatsServer, database_url: str, tmp_path: Path, js: JetStreamContext
) -> None:
    env = booking_created("b-1", "tok_visa")
    async with running(build(settings(nats_server, database_url, tmp_path))) as service:
        await publish(js, env)
        # Past JetStream's de-dup (new Nats-Msg-Id), same event id: the inbox stops it.
        await publish(js, env, msg_id="again")
        await eventually(lambda: _at_least(js, "PAYMENT", 1))
        await asyncio.sleep(0.3)
        assert await count(service, payments) == 1
    assert await stream_count(js, "PAYMENT") == 1


async def test_a_second_fact_about_the_same_booking_records_no_second_payment(
    nats_server: NatsServer, database_url: str, tmp_path: Path, js: JetStreamContext
) -> None:
    # Two different events (the inbox lets both through) about one booking: one payment, one fact.
    async with running(build(settings(nats_server, database_url, tmp_path))) as service:
        await publish(js, booking_created("b-2", "tok_visa"))
        await eventually(lambda: _at_least(js, "PAYMENT", 1))
        await publish(js, booking_created("b-2", "tok_visa"))
        await eventually(lambda: _consumed(js, 2))
        assert await count(service, payments) == 1
    assert await stream_count(js, "PAYMENT") == 1
    assert await stream_count(js, "DLQ") == 0  # handled, not failed


async def _consumed(js: JetStreamContext, n: int) -> bool:
    info = await js.consumer_info("BOOKING", "payment")
    return info.ack_floor.stream_seq >= n


async def test_a_crash_after_charging_does_not_charge_twice(
    nats_server: NatsServer, database_url: str, tmp_path: Path, js: JetStreamContext
) -> None:
    """The provider charged, then the service died before committing: the retry must reuse the charge."""
    cfg = settings(nats_server, database_url, tmp_path)
    env = booking_created("b-crash", "tok_visa")
    service = await build(cfg)
    # Simulate the crash: the first transaction fails after prepare() has charged.
    consumer = service.components[0]
    original = consumer._commit  # type: ignore[attr-defined]
    calls = 0

    async def crash_once(deliveries: list[object], **options: object) -> None:
        nonlocal calls
        calls += 1
        if calls <= 2:  # the first delivery's commit, and the redelivery's
            raise ConnectionError("database went away")
        await original(deliveries, **options)

    consumer._commit = crash_once  # type: ignore[attr-defined]
    await service.start()
    try:
        await publish(js, env)
        await eventually(lambda: _at_least(js, "PAYMENT", 1), timeout=10)
    finally:
        await service.stop(grace=5)
    from payment.simulator import SimulatedProvider

    psp = await SimulatedProvider.open(cfg.provider_ledger_url)
    async with psp._engine.connect() as conn:
        charges = (await conn.execute(select(func.count()).select_from(ledger))).scalar_one()
    await psp.close()
    assert calls >= 3
    assert charges == 1
    assert await stream_count(js, "PAYMENT") == 1


async def test_slow_provider_charges_a_batch_concurrently(
    nats_server: NatsServer, database_url: str, tmp_path: Path, js: JetStreamContext
) -> None:
    async with running(build(settings(nats_server, database_url, tmp_path, provider_latency_ms=500))):
        for i in range(20):
            await publish(js, booking_created(f"b-{i}", "tok_visa"))
        loop = asyncio.get_running_loop()
        started = loop.time()
        await eventually(lambda: _at_least(js, "PAYMENT", 20), timeout=15)
        # Twenty half-second charges one after the other would take ten seconds.
        assert loop.time() - started < 5
