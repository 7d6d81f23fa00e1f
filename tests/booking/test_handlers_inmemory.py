"""Booking's payment handlers without a nats-server (``choreo.testing``): milliseconds each.

The same paths as ``test_service.py`` and ``test_forged_facts.py`` run them end to end;
here only the transaction is under test: the row, what is emitted, what is refused.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import insert

from booking.handlers import DURABLE, ROUTES
from booking.migrations import MIGRATIONS
from booking.payment_checks import PaymentMismatchError
from booking.tables import bookings
from choreo.booking.v1 import events_pb2 as booking_events
from choreo.errors import PermanentError
from choreo.inbox import inbox_table
from choreo.outbox import outbox_table
from choreo.payment.v1 import events_pb2 as payment_events
from choreo.testing import HandlerHarness, handler_harness
from tests.booking.test_service import booking_status
from tests.support import prepared_schema, row_count

BOOKING_ID = "b-1"
WORKFLOW = "wf-1"


@pytest.fixture(scope="module")
def schema(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepared_schema(tmp_path_factory, MIGRATIONS, "booking")


@pytest.fixture
async def h(schema: Path) -> AsyncIterator[HandlerHarness]:
    """Booking's routes on a fresh database holding one PENDING booking of 1200 USD."""
    async with handler_harness(ROUTES, consumer=DURABLE, schema=schema, source="booking") as h:
        async with h.engine.begin() as conn:
            await conn.execute(
                insert(bookings).values(
                    booking_id=BOOKING_ID,
                    user_id="u1",
                    amount_cents=1200,
                    currency="USD",
                    status="PENDING",
                    correlation_id=WORKFLOW,
                    created_at_us=1,
                    updated_at_us=1,
                )
            )
        yield h


def succeeded(**fields: object) -> payment_events.PaymentSucceeded:
    values: dict[str, object] = {
        "payment_id": "pay_1",
        "booking_id": BOOKING_ID,
        "amount_cents": 1200,
        "currency": "USD",
        **fields,
    }
    return payment_events.PaymentSucceeded(**values)  # type: ignore[arg-type]


async def test_a_payment_success_confirms_the_booking_and_emits_booking_confirmed(h: HandlerHarness) -> None:
    handled = await h.deliver(succeeded(), correlation_id=WORKFLOW, source="payment")
    [confirmed] = handled.decoded(booking_events.BookingConfirmed)
    assert (confirmed.booking_id, confirmed.payment_id) == (BOOKING_ID, "pay_1")
    [fact] = handled.emitted
    assert (fact.subject, fact.source) == ("booking.confirmed", "booking")
    assert (fact.correlation_id, fact.causation_id) == (WORKFLOW, handled.envelope.id)
    assert await booking_status(h.engine, BOOKING_ID) == ("CONFIRMED", "pay_1", "")
    assert await row_count(h.engine, outbox_table) == 1


async def test_a_payment_failure_cancels_the_booking_with_its_reason(h: HandlerHarness) -> None:
    failed = payment_events.PaymentFailed(
        payment_id="pay_1", booking_id=BOOKING_ID, reason="card_declined", amount_cents=1200, currency="USD"
    )
    handled = await h.deliver(failed, correlation_id=WORKFLOW, source="payment")
    [cancelled] = handled.decoded(booking_events.BookingCancelled)
    assert (cancelled.booking_id, cancelled.reason, cancelled.payment_id) == (
        BOOKING_ID,
        "card_declined",
        "pay_1",
    )
    assert handled.decoded(booking_events.BookingConfirmed) == []
    assert await booking_status(h.engine, BOOKING_ID) == ("CANCELLED", "pay_1", "card_declined")


async def test_the_same_fact_again_is_already_processed_and_emits_nothing(h: HandlerHarness) -> None:
    first = await h.deliver(succeeded(), correlation_id=WORKFLOW, source="payment")
    again = await h.handle(first.envelope, stream_sequence=2)
    assert (first.duplicate, len(first.emitted)) == (False, 1)
    assert (again.duplicate, again.emitted) == (True, ())
    assert await row_count(h.engine, outbox_table) == 1


async def test_a_repeated_outcome_under_another_event_id_emits_nothing(h: HandlerHarness) -> None:
    """Past the inbox (another event id), the handler itself sees the repeat and changes nothing."""
    await h.deliver(succeeded(), correlation_id=WORKFLOW, source="payment")
    repeat = await h.deliver(succeeded(), correlation_id=WORKFLOW, source="payment")
    assert (repeat.duplicate, repeat.emitted) == (False, ())
    assert await booking_status(h.engine, BOOKING_ID) == ("CONFIRMED", "pay_1", "")


@pytest.mark.parametrize(
    ("fact", "correlation", "source", "field"),
    [
        (succeeded(amount_cents=1), WORKFLOW, "payment", "amount_cents"),
        (succeeded(currency="EUR"), WORKFLOW, "payment", "currency"),
        (succeeded(), "someone-elses-workflow", "payment", "correlation_id"),
        (succeeded(), WORKFLOW, "gateway", "ce-source"),
    ],
    ids=["amount", "currency", "correlation", "source"],
)
async def test_a_mismatching_fact_is_refused_for_good_and_commits_nothing(
    h: HandlerHarness, fact: payment_events.PaymentSucceeded, correlation: str, source: str, field: str
) -> None:
    with pytest.raises(PermanentError) as refused:
        await h.deliver(fact, correlation_id=correlation, source=source)
    assert isinstance(refused.value, PaymentMismatchError)
    assert refused.value.field == field
    assert await booking_status(h.engine, BOOKING_ID) == ("PENDING", "", "")
    # Rolled back, inbox record included: a later copy would be judged again.
    assert (await row_count(h.engine, outbox_table), await row_count(h.engine, inbox_table)) == (0, 0)
