"""Booking's part of the saga in-process against a real nats-server, on SQLite and PostgreSQL.

The resource of a create, the user's cancel (``cmd.booking.cancel``), inventory's
refusal on the INVENTORY stream and the payment timeout (JetStream keeps the wait,
across a restart of the service).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from booking.build import build
from booking.settings import BookingSettings
from choreo.booking.v1 import commands_pb2, events_pb2
from choreo.bus import ensure_stream
from choreo.contract import command_options
from choreo.envelope import H_ID, Envelope
from choreo.inventory.v1 import events_pb2 as inventory_events
from choreo.payment.v1 import events_pb2 as payment_events
from choreo.topology import Stream
from choreoctl.stack.natsserver import NatsServer
from tests.booking.test_service import booking_status, create, payment_fact, settings
from tests.streams import PAYMENT
from tests.support import eventually, publish, running, stream_count, stream_envelopes

CMD_CANCEL_BOOKING = command_options(commands_pb2.CancelBookingCommand).subject
#: The stream the inventory service would own: booking only consumes it.
INVENTORY = Stream("INVENTORY", ("inventory.>",))
CANCELLED = "choreo.booking.v1.BookingCancelled"


@pytest.fixture(autouse=True)
async def streams(js: JetStreamContext) -> None:
    await ensure_stream(js, PAYMENT)
    await ensure_stream(js, INVENTORY)


def with_timeout(nats_server: NatsServer, database_url: str, seconds: int) -> BookingSettings:
    return settings(nats_server, database_url).model_copy(update={"payment_timeout_seconds": seconds})


async def cancel(
    nc: NATS, booking_id: str, user_id: str = "u1", *, any_user: bool = False
) -> commands_pb2.CancelBookingReply:
    command = commands_pb2.CancelBookingCommand(booking_id=booking_id, user_id=user_id, any_user=any_user)
    msg = await nc.request(
        CMD_CANCEL_BOOKING, command.SerializeToString(), timeout=5, headers={H_ID: f"cancel-{booking_id}"}
    )
    return commands_pb2.CancelBookingReply.FromString(msg.data)


async def booking_facts(js: JetStreamContext, type_name: str) -> list[Envelope]:
    return [e for e in await stream_envelopes(js, "BOOKING") if e.type == type_name]


async def cancellations(js: JetStreamContext) -> list[events_pb2.BookingCancelled]:
    return [e.decode(events_pb2.BookingCancelled) for e in await booking_facts(js, CANCELLED)]


async def test_the_resource_and_its_quantity_travel_in_the_reply_and_the_fact(
    nats_server: NatsServer, database_url: str, nc: NATS, js: JetStreamContext
) -> None:
    async with running(build(settings(nats_server, database_url))):
        one = await create(nc, correlation="wf-r1", resource_id="room-12")
        three = await create(nc, correlation="wf-r3", resource_id="room-12", quantity=3)
        plain = await create(nc, correlation="wf-plain")
        bad_resource = await create(nc, correlation="wf-bad1", resource_id="room 12")
        bad_quantity = await create(nc, correlation="wf-bad2", resource_id="room-12", quantity=1001)
        lone_quantity = await create(nc, correlation="wf-bad3", quantity=2)
        await eventually(lambda: _at_least(js, "BOOKING", 3))
        facts = {
            e.correlation_id: e.decode(events_pb2.BookingCreated)
            for e in await booking_facts(js, "choreo.booking.v1.BookingCreated")
        }
    assert (one.booking.resource_id, one.booking.quantity) == ("room-12", 1)
    assert (three.booking.resource_id, three.booking.quantity) == ("room-12", 3)
    assert (plain.booking.resource_id, plain.booking.quantity) == ("", 0)
    assert [(f.resource_id, f.quantity) for f in facts.values()] == [("room-12", 1), ("room-12", 3), ("", 0)]
    for reply, field in (
        (bad_resource, "resource_id"),
        (bad_quantity, "quantity"),
        (lone_quantity, "quantity"),
    ):
        assert reply.error.code == commands_pb2.COMMAND_ERROR_CODE_INVALID_ARGUMENT
        assert reply.error.field == field


async def _at_least(js: JetStreamContext, stream: str, n: int) -> bool:
    return await stream_count(js, stream) >= n


async def test_a_user_cancels_a_booking_once_and_the_fact_joins_its_workflow(
    nats_server: NatsServer, database_url: str, nc: NATS, js: JetStreamContext
) -> None:
    async with running(build(settings(nats_server, database_url))) as service:
        assert service.engine is not None
        made = await create(nc, correlation="wf-c", resource_id="room-12", quantity=2)
        bid = made.booking.booking_id
        not_mine = await cancel(nc, bid, "u2")
        unknown = await cancel(nc, "no-such-booking")
        invalid = await cancel(nc, "")
        reply = await cancel(nc, bid)
        again = await cancel(nc, bid, "admin", any_user=True)
        await eventually(lambda: _at_least(js, "BOOKING", 2))
        assert await booking_status(service.engine, bid) == ("CANCELLED", "", "cancelled_by_user")
        await asyncio.sleep(0.3)
        [fact] = await booking_facts(js, CANCELLED)
    assert not_mine.error.code == unknown.error.code == commands_pb2.COMMAND_ERROR_CODE_NOT_FOUND
    assert (invalid.error.code, invalid.error.field) == (
        commands_pb2.COMMAND_ERROR_CODE_INVALID_ARGUMENT,
        "booking_id",
    )
    assert reply.booking.state == commands_pb2.BOOKING_STATE_CANCELLED
    assert (reply.booking.booking_id, reply.booking.cancellation_reason) == (bid, "cancelled_by_user")
    assert again.error.code == commands_pb2.COMMAND_ERROR_CODE_FAILED_PRECONDITION
    assert (fact.correlation_id, fact.causation_id, fact.source) == ("wf-c", f"cancel-{bid}", "booking")
    cancelled = fact.decode(events_pb2.BookingCancelled)
    assert (cancelled.reason, cancelled.resource_id, cancelled.payment_id) == (
        "cancelled_by_user",
        "room-12",
        "",
    )


async def test_a_confirmed_booking_cancelled_by_its_user_names_its_payment_and_a_repeat_is_no_dead_letter(
    nats_server: NatsServer, database_url: str, nc: NATS, js: JetStreamContext
) -> None:
    async with running(build(settings(nats_server, database_url))) as service:
        assert service.engine is not None
        made = await create(nc, correlation="wf-paid")
        bid = made.booking.booking_id
        paid = payment_events.PaymentSucceeded(
            payment_id="p1", booking_id=bid, amount_cents=1200, currency="USD"
        )
        await publish(js, payment_fact(paid, booking=made))
        await eventually(lambda: _at_least(js, "BOOKING", 2), message="confirmed")
        reply = await cancel(nc, bid)
        await publish(js, payment_fact(paid, booking=made))  # the payment's copy, after the cancel
        await eventually(lambda: _at_least(js, "BOOKING", 3), message="cancelled")
        await asyncio.sleep(0.5)
        assert await booking_status(service.engine, bid) == ("CANCELLED", "p1", "cancelled_by_user")
    assert reply.booking.payment_id == "p1"
    [cancelled] = await cancellations(js)
    assert (cancelled.reason, cancelled.payment_id) == ("cancelled_by_user", "p1")
    assert await stream_count(js, "DLQ") == 0


async def test_sold_out_on_the_inventory_stream_cancels_the_booking(
    nats_server: NatsServer, database_url: str, nc: NATS, js: JetStreamContext
) -> None:
    async with running(build(settings(nats_server, database_url))) as service:
        assert service.engine is not None
        made = await create(nc, correlation="wf-so", resource_id="room-12", quantity=2)
        bid = made.booking.booking_id
        refused = inventory_events.InventoryReservationFailed(
            booking_id=bid, resource_id="room-12", quantity=2, reason="sold_out", available=1
        )
        env = Envelope.wrap(
            refused, source="inventory", subject="inventory.reservation_failed", correlation_id="wf-so"
        )
        await publish(js, env)
        await publish(js, env, msg_id="a-copy")
        forged = Envelope.wrap(
            refused, source="gateway", subject="inventory.reservation_failed", correlation_id="wf-so"
        )
        await publish(js, forged)
        await eventually(lambda: _at_least(js, "BOOKING", 2), message="cancelled")
        await eventually(lambda: stream_count(js, "DLQ"), message="the forged copy dead-lettered")
        await asyncio.sleep(0.3)
        assert await booking_status(service.engine, bid) == ("CANCELLED", "", "sold_out")
    [cancelled] = await cancellations(js)
    assert (cancelled.reason, cancelled.resource_id) == ("sold_out", "room-12")
    dead = await js.get_msg("DLQ", 1)
    assert (dead.headers or {})["choreo-dlq-consumer"] == "booking-inventory"


async def test_a_booking_still_pending_at_its_timeout_is_cancelled_and_a_paid_one_is_not(
    nats_server: NatsServer, database_url: str, nc: NATS, js: JetStreamContext
) -> None:
    async with running(build(with_timeout(nats_server, database_url, 2))) as service:
        assert service.engine is not None
        started = time.monotonic()
        waiting = await create(nc, correlation="wf-wait", resource_id="room-12")
        paid = await create(nc, correlation="wf-paid")
        outcome = payment_events.PaymentSucceeded(
            payment_id="p1", booking_id=paid.booking.booking_id, amount_cents=1200, currency="USD"
        )
        await publish(js, payment_fact(outcome, booking=paid))
        await asyncio.sleep(1.0)
        assert (await booking_status(service.engine, waiting.booking.booking_id))[0] == "PENDING"
        await eventually(lambda: cancellations(js), timeout=10, message="the timeout")
        elapsed = time.monotonic() - started
        # A late payment for it: a no-op for booking (payment refunds it), not a dead letter.
        late = payment_events.PaymentSucceeded(
            payment_id="p2", booking_id=waiting.booking.booking_id, amount_cents=1200, currency="USD"
        )
        await publish(js, payment_fact(late, booking=waiting))
        await asyncio.sleep(0.5)
        assert await booking_status(service.engine, waiting.booking.booking_id) == (
            "CANCELLED",
            "",
            "payment_timeout",
        )
        assert (await booking_status(service.engine, paid.booking.booking_id))[0] == "CONFIRMED"
    assert 1.8 <= elapsed < 6, elapsed
    [cancelled] = await cancellations(js)
    assert (cancelled.booking_id, cancelled.reason, cancelled.resource_id) == (
        waiting.booking.booking_id,
        "payment_timeout",
        "room-12",
    )
    assert await stream_count(js, "DLQ") == 0


async def test_the_timeout_fires_after_a_restart_of_the_service(
    nats_server: NatsServer, database_url: str, nc: NATS, js: JetStreamContext
) -> None:
    """The wait is JetStream's: a booking created before a restart still times out, once."""
    config = with_timeout(nats_server, database_url, 2)
    async with running(build(config)) as first:
        assert first.engine is not None
        started = time.monotonic()
        made = await create(nc, correlation="wf-restart")
        bid = made.booking.booking_id
        await eventually(lambda: _at_least(js, "BOOKING", 1))
        await asyncio.sleep(0.3)  # the timeout consumer took it and deferred it
    assert time.monotonic() - started < 2, "the service stopped after the booking was due"
    await asyncio.sleep(0.5)
    async with running(build(config)) as second:
        assert second.engine is not None
        assert (await booking_status(second.engine, bid))[0] == "PENDING"
        await eventually(lambda: cancellations(js), timeout=10, message="the timeout after the restart")
        assert await booking_status(second.engine, bid) == ("CANCELLED", "", "payment_timeout")
        await asyncio.sleep(0.5)
    assert time.monotonic() - started >= 1.8
    assert len(await cancellations(js)) == 1


async def test_a_cancel_while_the_database_refuses_connections_answers_unavailable(
    nats_server: NatsServer, tmp_path: Path, nc: NATS
) -> None:
    """The client is told to retry, nothing leaks, and the retry cancels the booking."""
    import asyncpg

    from tests.conftest import PG_URL, make_database_url

    urls = make_database_url("postgres", tmp_path)
    url = await anext(urls)
    name = url.rsplit("/", 1)[1]
    admin = await asyncpg.connect(PG_URL)
    try:
        async with running(build(settings(nats_server, url))):
            made = await create(nc, correlation="wf-down")
            await admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
            )
            refused = await cancel(nc, made.booking.booking_id)
            await admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
            retried = await cancel(nc, made.booking.booking_id)
    finally:
        await admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
        await admin.close()
        with pytest.raises(StopAsyncIteration):
            await anext(urls)
    assert refused.error.code == commands_pb2.COMMAND_ERROR_CODE_UNAVAILABLE
    assert refused.error.message == "the booking database is unavailable; the booking was not cancelled"
    assert retried.booking.state == commands_pb2.BOOKING_STATE_CANCELLED
