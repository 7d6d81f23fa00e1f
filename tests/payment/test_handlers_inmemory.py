"""Payment's route without a nats-server (``choreo.testing``): milliseconds each.

The real simulated provider charges the token sealed to this session's key, as
``test_service.py`` sets it up end to end; here only the route is under test: its
``prepare`` step (the charge) and its transaction (the payment row, the fact emitted).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from choreo.errors import PermanentError
from choreo.inbox import inbox_table
from choreo.outbox import outbox_table
from choreo.payment.v1 import events_pb2 as payment_events
from choreo.sealing import TokenOpener, parse_private_keys
from choreo.testing import HandlerHarness, handler_harness
from payment.handlers import DURABLE, UnreadableTokenError, routes
from payment.migrations import MIGRATIONS
from payment.provider import ChargeRequest, ChargeResult, RefundRequest, RefundResult
from payment.records import Bookings
from payment.simulator import SimulatedProvider
from payment.tables import payments
from tests.payment.test_service import booking_created
from tests.support import TOKEN_PRIVATE_KEY, prepared_schema, row_count


class CountedProvider:
    """The simulated provider, counting the charges asked of it (its ledger replays a repeated key)."""

    def __init__(self, provider: SimulatedProvider) -> None:
        self._provider = provider
        self.charged: list[str] = []
        self.refunded: list[str] = []

    async def charge(self, request: ChargeRequest) -> ChargeResult:
        self.charged.append(request.idempotency_key)
        return await self._provider.charge(request)

    async def refund(self, request: RefundRequest) -> RefundResult:
        self.refunded.append(request.charge_key)
        return await self._provider.refund(request)

    async def close(self) -> None:
        await self._provider.close()


@pytest.fixture(scope="module")
def schema(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepared_schema(tmp_path_factory, MIGRATIONS, "payment")


@pytest.fixture
async def provider(tmp_path: Path) -> AsyncIterator[CountedProvider]:
    counted = CountedProvider(await SimulatedProvider.open(f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}"))
    yield counted
    await counted.close()


@pytest.fixture
async def h(schema: Path, provider: CountedProvider) -> AsyncIterator[HandlerHarness]:
    opener = TokenOpener(parse_private_keys(TOKEN_PRIVATE_KEY))
    bookings = Bookings()
    async with handler_harness(routes(provider, opener, bookings), consumer=DURABLE, schema=schema) as h:
        bookings.bind(h.engine)
        yield h


async def test_a_good_token_is_charged_and_emits_payment_succeeded(
    h: HandlerHarness, provider: CountedProvider
) -> None:
    handled = await h.handle(booking_created("b-visa", "tok_visa", "wf-visa"))
    [paid] = handled.decoded(payment_events.PaymentSucceeded)
    assert (paid.booking_id, paid.amount_cents, paid.currency) == ("b-visa", 2500, "EUR")
    assert paid.payment_id.startswith("pay_")
    assert paid.provider_charge_id
    [fact] = handled.emitted
    assert (fact.subject, fact.source) == ("payment.succeeded", "payment")
    assert (fact.correlation_id, fact.causation_id) == ("wf-visa", handled.envelope.id)
    assert provider.charged == ["b-visa"]
    assert (await row_count(h.engine, payments), await row_count(h.engine, outbox_table)) == (1, 1)


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ("tok_chargeDeclined", "card_declined"),
        ("tok_chargeDeclinedInsufficientFunds", "insufficient_funds"),
        ("tok_zz9", "invalid_payment_token"),
    ],
)
async def test_a_declined_token_emits_payment_failed_with_the_reason(
    h: HandlerHarness, token: str, reason: str
) -> None:
    handled = await h.handle(booking_created("b-declined", token))
    [failed] = handled.decoded(payment_events.PaymentFailed)
    assert (failed.booking_id, failed.reason) == ("b-declined", reason)
    assert (failed.amount_cents, failed.currency) == (2500, "EUR")
    assert handled.decoded(payment_events.PaymentSucceeded) == []


async def test_a_redelivered_fact_is_neither_charged_nor_paid_again(
    h: HandlerHarness, provider: CountedProvider
) -> None:
    env = booking_created("b-1", "tok_visa")
    first = await h.handle(env)
    again = await h.handle(env, stream_sequence=2)
    assert (len(first.emitted), again.duplicate, again.emitted) == (1, True, ())
    assert provider.charged == ["b-1"]  # the inbox is read before the prepare step
    assert await row_count(h.engine, payments) == 1


async def test_a_second_fact_about_the_same_booking_records_no_second_payment(h: HandlerHarness) -> None:
    await h.handle(booking_created("b-2", "tok_visa"))
    second = await h.handle(booking_created("b-2", "tok_visa"))
    assert (second.duplicate, second.emitted) == (False, ())
    assert await row_count(h.engine, payments) == 1


async def test_a_token_that_does_not_open_is_refused_and_never_charged(
    h: HandlerHarness, provider: CountedProvider
) -> None:
    with pytest.raises(PermanentError) as refused:
        await h.handle(booking_created("b-sealed", "", sealed=b"\x07garbage-garbage"))
    assert isinstance(refused.value, UnreadableTokenError)
    assert provider.charged == []
    assert [await row_count(h.engine, t) for t in (payments, outbox_table, inbox_table)] == [0, 0, 0]
