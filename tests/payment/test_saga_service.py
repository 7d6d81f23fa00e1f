"""The payment service in the booking saga, over a real nats-server, on SQLite and PostgreSQL.

Booking's and inventory's facts are published by hand on their streams, in the
orders JetStream may deliver them; payment charges on the reservation, refunds on
the cancellation, and never charges a booking cancelled first.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from nats.js import JetStreamContext
from sqlalchemy import func, select

from choreo.booking.v1 import events_pb2 as booking_events
from choreo.bus import ensure_stream
from choreo.envelope import Envelope
from choreo.inventory.v1 import events_pb2 as inventory_events
from choreo.payment.v1 import events_pb2 as payment_events
from choreo.topology import Stream
from choreoctl.stack.natsserver import NatsServer
from payment.build import build
from payment.simulator import SimulatedProvider, ledger, refunds_ledger
from payment.tables import cancellations, payments
from tests.payment.test_service import (  # noqa: F401 (booking_stream: an autouse fixture)
    SESSION_SEALER,
    booking_stream,
    settings,
)
from tests.support import eventually, publish, running, stream_count, stream_envelopes

#: Inventory's stream (inventory owns and provisions it; here the test does).
INVENTORY = Stream("INVENTORY", ("inventory.>",))


def created(booking_id: str) -> Envelope:
    event = booking_events.BookingCreated(
        booking_id=booking_id,
        user_id="u1",
        amount_cents=4200,
        currency="EUR",
        sealed_payment_token=SESSION_SEALER.seal("tok_visa", bound_to=booking_id),
        resource_id="room-1",
        quantity=2,
    )
    return Envelope.wrap(
        event, source="booking", subject="booking.created", correlation_id=f"wf-{booking_id}"
    )


def cancelled(booking_id: str) -> Envelope:
    event = booking_events.BookingCancelled(
        booking_id=booking_id, reason="cancelled_by_user", resource_id="room-1"
    )
    return Envelope.wrap(
        event, source="booking", subject="booking.cancelled", correlation_id=f"wf-{booking_id}"
    )


def reserved(booking_id: str) -> Envelope:
    event = inventory_events.InventoryReserved(booking_id=booking_id, resource_id="room-1", quantity=2)
    return Envelope.wrap(
        event, source="inventory", subject="inventory.reserved", correlation_id=f"wf-{booking_id}"
    )


async def _consumed(js: JetStreamContext, stream: str, durable: str, n: int) -> bool:
    info = await js.consumer_info(stream, durable)
    return info.ack_floor.stream_seq >= n and not info.num_ack_pending


async def test_charged_on_the_reservation_refunded_on_the_cancellation_never_charged_after_it(
    nats_server: NatsServer, database_url: str, tmp_path: Path, js: JetStreamContext
) -> None:
    await ensure_stream(js, INVENTORY)
    cfg = settings(nats_server, database_url, tmp_path)
    async with running(build(cfg)):
        # b-paid: created, reserved (charged), then cancelled by its user (refunded).
        await publish(js, created("b-paid"))
        await publish(js, reserved("b-paid"))
        await eventually(lambda: _at_least(js, 1), message="b-paid's PaymentSucceeded")
        await publish(js, cancelled("b-paid"))
        # b-early: reserved before its BookingCreated is handled: retried, then charged.
        await publish(js, reserved("b-early"))
        await publish(js, created("b-early"))
        # b-cancelled: cancelled before its late reservation: never charged.
        await publish(js, created("b-cancelled"))
        await publish(js, cancelled("b-cancelled"))
        await eventually(lambda: _consumed(js, "BOOKING", "payment", 5), message="BOOKING consumed")
        await publish(js, reserved("b-cancelled"))
        await eventually(
            lambda: _consumed(js, "INVENTORY", "payment-inventory", 3), message="INVENTORY consumed"
        )
        await eventually(lambda: _at_least(js, 3), message="three payment facts")
        facts = await stream_envelopes(js, "PAYMENT")
    seen = sorted((fact.type.rsplit(".", 1)[1], _booking(fact)) for fact in facts)
    assert seen == [
        ("PaymentRefunded", "b-paid"),
        ("PaymentSucceeded", "b-early"),
        ("PaymentSucceeded", "b-paid"),
    ]
    refunded = next(f for f in facts if f.type.endswith("PaymentRefunded"))
    assert (refunded.correlation_id, refunded.source) == ("wf-b-paid", "payment")
    event = refunded.decode(payment_events.PaymentRefunded)
    assert (event.amount_cents, event.currency, event.reason) == (4200, "EUR", "cancelled_by_user")
    assert await stream_count(js, "DLQ") == 0
    assert await _ledger(cfg.provider_ledger_url) == {"b-paid": (1, 1), "b-early": (1, 0)}


async def _at_least(js: JetStreamContext, n: int) -> bool:
    return await stream_count(js, "PAYMENT") >= n


def _booking(fact: Envelope) -> str:
    for message_type in (
        payment_events.PaymentSucceeded,
        payment_events.PaymentFailed,
        payment_events.PaymentRefunded,
    ):
        if fact.type == message_type.DESCRIPTOR.full_name:
            return str(fact.decode(message_type).booking_id)  # type: ignore[attr-defined]
    raise AssertionError(f"unexpected fact {fact.type}")


async def _ledger(url: str) -> dict[str, tuple[int, int]]:
    """(charges, refunds) per booking in the provider's ledger."""
    psp = await SimulatedProvider.open(url)
    try:
        async with psp._engine.connect() as conn:
            charges = {
                key: int(n)
                for key, n in await conn.execute(
                    select(ledger.c.idempotency_key, func.count()).group_by(ledger.c.idempotency_key)
                )
            }
            refunds = {
                key: int(n)
                for key, n in await conn.execute(
                    select(refunds_ledger.c.charge_key, func.count()).group_by(refunds_ledger.c.charge_key)
                )
            }
    finally:
        await psp.close()
    return {key: (n, refunds.get(key, 0)) for key, n in charges.items()}


async def test_a_rebuilt_database_keeps_the_refund_and_the_cancellation(
    nats_server: NatsServer, database_url: str, tmp_path: Path, js: JetStreamContext
) -> None:
    """Recovery by replay gives back the refund: a later cancellation fact refunds nothing again."""
    await ensure_stream(js, INVENTORY)
    cancel = cancelled("b-paid")
    async with running(build(settings(nats_server, database_url, tmp_path))):
        await publish(js, created("b-paid"))
        await publish(js, reserved("b-paid"))
        await eventually(lambda: _at_least(js, 1), message="PaymentSucceeded")
        await publish(js, cancel)
        await eventually(lambda: _at_least(js, 2), message="PaymentRefunded")
    lost = settings(nats_server, f"sqlite+aiosqlite:///{tmp_path / 'rebuilt.db'}", tmp_path)
    async with running(build(lost)) as service:
        assert service.engine is not None
        async with service.engine.connect() as conn:
            row = (await conn.execute(select(payments).where(payments.c.booking_id == "b-paid"))).one()
            reason = (await conn.execute(select(cancellations.c.reason))).scalar_one()
        refunded = (await stream_envelopes(js, "PAYMENT"))[1].decode(payment_events.PaymentRefunded)
        assert (row.refund_id, row.provider_refund_id, reason) == (
            refunded.refund_id,
            refunded.provider_refund_id,
            "cancelled_by_user",
        )
        await publish(js, cancel, msg_id="again")  # the same fact, redelivered: the rebuilt inbox has it
        await publish(js, cancelled("b-paid"))  # another fact about it: the payment is refunded already
        await eventually(lambda: _consumed(js, "BOOKING", "payment", 4), message="BOOKING consumed")
    assert await stream_count(js, "PAYMENT") == 2
    assert await _ledger(lost.provider_ledger_url) == {"b-paid": (1, 1)}


async def test_bookings_cancelled_right_after_they_were_created_end_refunded_or_never_charged(
    nats_server: NatsServer, database_url: str, tmp_path: Path, js: JetStreamContext
) -> None:
    """Bookings without a resource, each cancelled at once: their two facts often share a batch."""
    await ensure_stream(js, INVENTORY)
    bookings = [f"b-{i}" for i in range(10)]
    cfg = settings(nats_server, database_url, tmp_path)
    async with running(build(cfg)):
        for booking in bookings:
            plain = created(booking).decode(booking_events.BookingCreated)
            plain.resource_id, plain.quantity = "", 0
            await publish(
                js, Envelope.wrap(plain, source="booking", subject="booking.created", correlation_id=booking)
            )
            await publish(js, cancelled(booking))
        await eventually(
            lambda: _consumed(js, "BOOKING", "payment", 20), timeout=20, message="BOOKING consumed"
        )
        charged = await _ledger(cfg.provider_ledger_url)
        # The relay publishes what the handlers committed: a charge and a refund per charged booking.
        await eventually(
            lambda: _at_least(js, 2 * len(charged)), message="the facts of the committed payments"
        )
        await asyncio.sleep(0.3)  # and nothing more
        facts = await stream_envelopes(js, "PAYMENT")
    assert all(counts == (1, 1) for counts in charged.values()), charged  # every charge refunded, once
    kinds = [fact.type.rsplit(".", 1)[1] for fact in facts]
    assert kinds.count("PaymentSucceeded") == kinds.count("PaymentRefunded") == len(charged)
    assert len(kinds) == 2 * len(charged)
    assert await stream_count(js, "DLQ") == 0


async def test_the_previous_releases_durable_is_updated_to_receive_cancellations(
    nats_server: NatsServer, database_url: str, tmp_path: Path, js: JetStreamContext
) -> None:
    """A rolling update: durable ``payment`` exists, filtered on booking.created only, as before."""
    from nats.js.api import AckPolicy, ConsumerConfig

    await ensure_stream(js, INVENTORY)
    old = ConsumerConfig(
        durable_name="payment", ack_policy=AckPolicy.EXPLICIT, filter_subject="booking.created"
    )
    await js.add_consumer("BOOKING", old)
    async with running(build(settings(nats_server, database_url, tmp_path))):
        await publish(js, created("b-paid"))
        await publish(js, reserved("b-paid"))
        await eventually(lambda: _at_least(js, 1), message="PaymentSucceeded")
        await publish(js, cancelled("b-paid"))
        await eventually(lambda: _at_least(js, 2), message="PaymentRefunded")
    info = await js.consumer_info("BOOKING", "payment")
    assert sorted(info.config.filter_subjects or [info.config.filter_subject]) == [
        "booking.cancelled",
        "booking.created",
    ]
