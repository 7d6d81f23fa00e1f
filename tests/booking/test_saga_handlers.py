"""Booking's part of the saga, transaction by transaction, on SQLite and PostgreSQL (``choreo.testing``).

Inventory's refusal (``sold_out``), a user's cancel, the payment timeout and the payment
outcomes, in the orders a choreography delivers them: late, repeated, racing.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from booking import handlers, sold_out, timeouts
from booking.cancel import CancelRequest, cancel_booking
from booking.migrations import MIGRATIONS
from booking.payment_checks import ContradictingPaymentError, UnknownBookingError
from booking.sold_out import InventoryMismatchError
from booking.tables import bookings
from choreo.booking.v1 import commands_pb2
from choreo.booking.v1 import events_pb2 as booking_events
from choreo.clock import to_timestamp
from choreo.db import make_engine
from choreo.envelope import Envelope
from choreo.errors import Deferred, PermanentError
from choreo.inventory.v1 import events_pb2 as inventory_events
from choreo.outbox import outbox_table
from choreo.payment.v1 import events_pb2 as payment_events
from choreo.schema import prepare_schema
from choreo.testing import HandlerHarness
from tests.booking.test_service import booking_status
from tests.conftest import make_database_url
from tests.support import prepared_schema, row_count

BOOKING_ID = "b-1"
WORKFLOW = "wf-1"
RESOURCE = "room-12"
CREATED_US = 1_700_000_000_000_000


@pytest.fixture(scope="module")
def schema(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepared_schema(tmp_path_factory, MIGRATIONS, "booking")


@pytest.fixture(params=["sqlite", "postgres"])
async def engine(request: pytest.FixtureRequest, schema: Path, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """Booking's database with its schema, once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        path = tmp_path / "booking.db"
        shutil.copyfile(schema, path)
        engine = make_engine(f"sqlite+aiosqlite:///{path}", synchronous="NORMAL")
        yield engine
        await engine.dispose()
        return
    async for url in make_database_url("postgres", tmp_path):
        engine = make_engine(url)
        await prepare_schema(engine, MIGRATIONS, mode="auto", service="booking", setting="(test)")
        yield engine
        await engine.dispose()


@dataclass
class Booking:
    """Booking's consumers on one database holding one PENDING booking of 1200 USD for 2 units of a room."""

    engine: AsyncEngine
    payments: HandlerHarness
    inventory: HandlerHarness
    timeouts: HandlerHarness

    async def status(self) -> tuple[str, str, str]:
        return await booking_status(self.engine, BOOKING_ID)

    async def cancel(self, user_id: str = "u1", *, any_user: bool = False) -> commands_pb2.CancelBookingReply:
        command = commands_pb2.CancelBookingCommand(booking_id=BOOKING_ID, user_id=user_id, any_user=any_user)
        async with self.engine.begin() as conn:
            return await cancel_booking(conn, CancelRequest(command, "cmd-cancel"), "booking")

    async def cancelled_facts(self) -> list[booking_events.BookingCancelled]:
        """The ``BookingCancelled`` facts in the outbox (every emitter's), oldest first."""
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(outbox_table).order_by(outbox_table.c.id))).mappings().all()
        facts = [Envelope.from_headers(r["subject"], json.loads(r["headers"]), r["payload"]) for r in rows]
        return [f.decode(booking_events.BookingCancelled) for f in facts if f.subject == "booking.cancelled"]


@pytest.fixture
async def b(engine: AsyncEngine) -> Booking:
    async with engine.begin() as conn:
        await conn.execute(
            insert(bookings).values(
                booking_id=BOOKING_ID,
                user_id="u1",
                amount_cents=1200,
                currency="USD",
                status="PENDING",
                correlation_id=WORKFLOW,
                resource_id=RESOURCE,
                quantity=2,
                created_at_us=CREATED_US,
                updated_at_us=CREATED_US,
            )
        )
    return Booking(
        engine,
        HandlerHarness(engine, handlers.ROUTES, consumer=handlers.DURABLE, source="booking"),
        HandlerHarness(engine, sold_out.ROUTES, consumer=sold_out.DURABLE, source="booking"),
        HandlerHarness(engine, timeouts.routes(300), consumer=timeouts.DURABLE, source="booking"),
    )


def succeeded(payment_id: str = "pay_1") -> payment_events.PaymentSucceeded:
    return payment_events.PaymentSucceeded(
        payment_id=payment_id, booking_id=BOOKING_ID, amount_cents=1200, currency="USD"
    )


def failed(reason: str = "card_declined") -> payment_events.PaymentFailed:
    return payment_events.PaymentFailed(
        payment_id="pay_1", booking_id=BOOKING_ID, amount_cents=1200, currency="USD", reason=reason
    )


def refused(**fields: Any) -> inventory_events.InventoryReservationFailed:
    values = {
        "booking_id": BOOKING_ID,
        "resource_id": RESOURCE,
        "quantity": 2,
        "reason": "sold_out",
        **fields,
    }
    return inventory_events.InventoryReservationFailed(**values, available=1)


def created(created_us: int = CREATED_US) -> booking_events.BookingCreated:
    return booking_events.BookingCreated(
        booking_id=BOOKING_ID,
        user_id="u1",
        amount_cents=1200,
        currency="USD",
        created_at=to_timestamp(created_us),
        resource_id=RESOURCE,
        quantity=2,
    )


async def pay(b: Booking, fact: Any) -> tuple[Any, ...]:
    return (await b.payments.deliver(fact, correlation_id=WORKFLOW, source="payment")).emitted


# --- inventory: sold out -------------------------------------------------------------------------


async def test_sold_out_cancels_a_pending_booking_once_naming_its_resource(b: Booking) -> None:
    handled = await b.inventory.deliver(refused(), correlation_id=WORKFLOW, source="inventory")
    [cancelled] = handled.decoded(booking_events.BookingCancelled)
    assert (cancelled.booking_id, cancelled.reason, cancelled.resource_id, cancelled.payment_id) == (
        BOOKING_ID,
        "sold_out",
        RESOURCE,
        "",
    )
    assert handled.emitted[0].correlation_id == WORKFLOW
    assert await b.status() == ("CANCELLED", "", "sold_out")
    # The same refusal again (another event id, past the inbox): nothing more.
    again = await b.inventory.deliver(refused(), correlation_id=WORKFLOW, source="inventory")
    assert again.emitted == ()
    assert await row_count(b.engine, outbox_table) == 1


@pytest.mark.parametrize(
    ("fact", "source", "correlation", "field"),
    [
        (refused(), "gateway", WORKFLOW, "ce-source"),
        (refused(resource_id="room-13"), "inventory", WORKFLOW, "resource_id"),
        (refused(quantity=3), "inventory", WORKFLOW, "quantity"),
        (refused(), "inventory", "another-workflow", "correlation_id"),
    ],
    ids=["source", "resource", "quantity", "workflow"],
)
async def test_an_inventory_fact_that_disagrees_is_refused_for_good(
    b: Booking, fact: inventory_events.InventoryReservationFailed, source: str, correlation: str, field: str
) -> None:
    with pytest.raises(InventoryMismatchError) as caught:
        await b.inventory.deliver(fact, correlation_id=correlation, source=source)
    assert caught.value.field == field
    assert await b.status() == ("PENDING", "", "")
    assert await row_count(b.engine, outbox_table) == 0


async def test_sold_out_for_an_unknown_booking_is_refused_for_good(b: Booking) -> None:
    with pytest.raises(UnknownBookingError):
        await b.inventory.deliver(refused(booking_id="nope"), correlation_id=WORKFLOW, source="inventory")


async def test_sold_out_after_the_user_cancelled_is_a_no_op(b: Booking) -> None:
    await b.cancel()
    handled = await b.inventory.deliver(refused(), correlation_id=WORKFLOW, source="inventory")
    assert handled.emitted == ()
    assert await b.status() == ("CANCELLED", "", "cancelled_by_user")


# --- the user's cancel ---------------------------------------------------------------------------


async def test_a_user_cancels_a_pending_booking_once(b: Booking) -> None:
    reply = await b.cancel()
    assert reply.booking.state == commands_pb2.BOOKING_STATE_CANCELLED
    assert (reply.booking.cancellation_reason, reply.booking.resource_id, reply.booking.quantity) == (
        "cancelled_by_user",
        RESOURCE,
        2,
    )
    [fact] = await b.cancelled_facts()
    assert (fact.reason, fact.payment_id, fact.resource_id) == ("cancelled_by_user", "", RESOURCE)
    again = await b.cancel()
    assert again.error.code == commands_pb2.COMMAND_ERROR_CODE_FAILED_PRECONDITION
    assert len(await b.cancelled_facts()) == 1


async def test_only_the_bookings_user_or_one_acting_for_every_user_may_cancel_it(b: Booking) -> None:
    other = await b.cancel("u2")
    assert other.error.code == commands_pb2.COMMAND_ERROR_CODE_NOT_FOUND
    assert await b.status() == ("PENDING", "", "")
    command = commands_pb2.CancelBookingCommand(booking_id="nope", user_id="u1")
    async with b.engine.begin() as conn:
        unknown = await cancel_booking(conn, CancelRequest(command, "cmd-x"), "booking")
    assert unknown.error.code == commands_pb2.COMMAND_ERROR_CODE_NOT_FOUND
    admin = await b.cancel("admin", any_user=True)
    assert admin.booking.state == commands_pb2.BOOKING_STATE_CANCELLED
    assert await row_count(b.engine, outbox_table) == 1


async def test_a_cancel_after_confirmed_names_the_payment_and_its_repeat_is_a_no_op(b: Booking) -> None:
    await pay(b, succeeded())
    reply = await b.cancel()
    assert (reply.booking.state, reply.booking.payment_id) == (commands_pb2.BOOKING_STATE_CANCELLED, "pay_1")
    [fact] = await b.cancelled_facts()
    assert (fact.reason, fact.payment_id, fact.resource_id) == ("cancelled_by_user", "pay_1", RESOURCE)
    # The booking's own payment again (a redelivered copy): a repeat, not a contradiction.
    assert await pay(b, succeeded()) == ()
    assert await b.status() == ("CANCELLED", "pay_1", "cancelled_by_user")
    # Anything else for it is still an operator's matter.
    with pytest.raises(ContradictingPaymentError):
        await pay(b, failed())
    with pytest.raises(ContradictingPaymentError):
        await pay(b, succeeded("pay_2"))


@pytest.mark.parametrize("outcome", [succeeded(), failed()], ids=["succeeded", "failed"])
async def test_a_payment_outcome_after_the_users_cancel_is_late_not_contradicting(
    b: Booking, outcome: Any
) -> None:
    await b.cancel()
    assert await pay(b, outcome) == ()
    assert await pay(b, outcome) == ()  # and repeated
    assert await b.status() == ("CANCELLED", "", "cancelled_by_user")
    assert len(await b.cancelled_facts()) == 1


@pytest.mark.parametrize("outcome", [succeeded(), failed()], ids=["succeeded", "failed"])
async def test_a_payment_outcome_after_sold_out_is_late(b: Booking, outcome: Any) -> None:
    await b.inventory.deliver(refused(), correlation_id=WORKFLOW, source="inventory")
    assert await pay(b, outcome) == ()
    assert await b.status() == ("CANCELLED", "", "sold_out")


async def test_a_success_after_the_payment_failed_still_contradicts(b: Booking) -> None:
    [cancel] = await pay(b, failed())
    assert cancel.decode(booking_events.BookingCancelled).resource_id == RESOURCE
    with pytest.raises(ContradictingPaymentError):
        await pay(b, succeeded())


async def test_a_cancel_racing_the_payment_ends_cancelled_with_one_cancellation(b: Booking) -> None:
    """Whichever commits first, the booking ends CANCELLED by its user, with one BookingCancelled."""
    reply, emitted = await asyncio.gather(b.cancel(), pay(b, succeeded()))
    assert reply.booking.state == commands_pb2.BOOKING_STATE_CANCELLED
    status, payment_id, reason = await b.status()
    assert (status, reason) == ("CANCELLED", "cancelled_by_user")
    [fact] = await b.cancelled_facts()
    # Confirmed first: the cancel names the payment (payment refunds it); else the payment came late.
    assert fact.payment_id == payment_id == ("pay_1" if emitted else "")


# --- the payment timeout -------------------------------------------------------------------------


async def test_a_booking_not_due_is_deferred_by_what_is_left() -> None:
    prepare = timeouts.PaymentTimeout(300)
    now_us = int(time.time() * 1_000_000)
    env = Envelope.wrap(
        created(now_us - 100_000_000), source="booking", subject="booking.created", correlation_id=WORKFLOW
    )
    with pytest.raises(Deferred) as deferred:
        await prepare(created(now_us - 100_000_000), env)
    assert 199 <= deferred.value.seconds <= 200.5
    await prepare(created(now_us - 301_000_000), env)  # due: no Deferred


async def test_a_booking_still_pending_at_its_timeout_is_cancelled_once(b: Booking) -> None:
    handled = await b.timeouts.deliver(created(), correlation_id=WORKFLOW, source="booking")
    [cancelled] = handled.decoded(booking_events.BookingCancelled)
    assert (cancelled.reason, cancelled.resource_id, cancelled.payment_id) == (
        "payment_timeout",
        RESOURCE,
        "",
    )
    assert await b.status() == ("CANCELLED", "", "payment_timeout")
    again = await b.timeouts.deliver(created(), correlation_id=WORKFLOW, source="booking")
    assert again.emitted == ()
    # The payment that answers afterwards is late: payment refunds it.
    assert await pay(b, succeeded()) == ()
    assert await b.status() == ("CANCELLED", "", "payment_timeout")
    assert len(await b.cancelled_facts()) == 1


async def test_the_timeout_of_a_confirmed_booking_is_a_no_op(b: Booking) -> None:
    await pay(b, succeeded())
    handled = await b.timeouts.deliver(created(), correlation_id=WORKFLOW, source="booking")
    assert handled.emitted == ()
    assert await b.status() == ("CONFIRMED", "pay_1", "")


async def test_a_created_fact_that_is_not_the_bookings_may_not_time_it_out(b: Booking) -> None:
    with pytest.raises(PermanentError):
        await b.timeouts.deliver(created(CREATED_US - 1), correlation_id=WORKFLOW, source="booking")
    with pytest.raises(PermanentError):
        await b.timeouts.deliver(created(), correlation_id="another-workflow", source="booking")
    assert await b.status() == ("PENDING", "", "")
