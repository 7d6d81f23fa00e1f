"""Payment in the booking saga, on SQLite and PostgreSQL: charged once, never after a cancel, refunded once.

Each test delivers facts in an order (or duplicated) as JetStream may, and checks what
payment emitted and what the provider's ledger holds: at most one charge per booking,
at most one refund per charge, a charge of a cancelled booking always refunded.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from choreo.booking.v1 import events_pb2 as booking_events
from choreo.clock import to_timestamp
from choreo.db import now_us
from choreo.errors import PermanentError, TransientError
from choreo.payment.v1 import events_pb2 as payment_events
from choreo.testing import Handled
from tests.payment.sagaparts import PaymentUnderTest, payment_under_test
from tests.payment.test_service import SESSION_SEALER

PAID = payment_events.PaymentSucceeded
FAILED = payment_events.PaymentFailed
REFUNDED = payment_events.PaymentRefunded


@pytest.fixture(params=["sqlite", "postgres"])
async def pay(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[PaymentUnderTest]:
    async with payment_under_test(request.param, tmp_path) as under_test:
        yield under_test


def facts(*handled: Handled) -> list[str]:
    """The types of what the deliveries emitted, in order, without their package."""
    return [env.type.rsplit(".", 1)[1] for h in handled for env in h.emitted]


async def test_a_resource_booking_is_charged_only_on_its_reservation(pay: PaymentUnderTest) -> None:
    created = await pay.created("b-1")
    assert (facts(created), await pay.ledger("b-1")) == ([], (0, 0))
    assert await pay.sealed_token("b-1")  # kept, sealed, until the charge
    reserved = await pay.reserved("b-1")
    [paid] = reserved.decoded(PAID)
    assert (paid.booking_id, paid.amount_cents, paid.currency) == ("b-1", 2500, "EUR")
    assert reserved.emitted[0].correlation_id == "wf-b-1"
    assert await pay.ledger("b-1") == (1, 0)
    assert await pay.sealed_token("b-1") == b""  # charged: the token is forgotten


async def test_cancelled_before_its_reservation_is_never_charged(pay: PaymentUnderTest) -> None:
    await pay.created("b-1")
    cancelled = await pay.cancelled("b-1", "payment_timeout")
    assert await pay.sealed_token("b-1") == b""
    late = await pay.reserved("b-1")
    assert facts(cancelled, late) == []
    assert await pay.ledger("b-1") == (0, 0)
    assert await pay.payment("b-1") is None
    assert await pay.cancellation("b-1") == "payment_timeout"


async def test_cancelled_before_its_booking_created_was_handled_is_never_charged(
    pay: PaymentUnderTest,
) -> None:
    # A redelivery can reorder them: the cancellation is recorded, and wins.
    cancelled = await pay.cancelled("b-1", "sold_out")
    created = await pay.created("b-1")
    reserved = await pay.reserved("b-1")
    plain = (await pay.cancelled("b-2", "cancelled_by_user"), await pay.created("b-2", resource_id=""))
    assert facts(cancelled, created, reserved, *plain) == []
    assert (await pay.ledger("b-1"), await pay.ledger("b-2")) == ((0, 0), (0, 0))
    assert await pay.sealed_token("b-1") is None  # no request was recorded


@pytest.mark.parametrize("resource_id", ["room-1", ""], ids=["resource", "no-resource"])
async def test_cancelled_after_its_charge_is_refunded_once(pay: PaymentUnderTest, resource_id: str) -> None:
    created = await pay.created("b-1", resource_id=resource_id)
    charged = await pay.reserved("b-1") if resource_id else created
    [paid] = charged.decoded(PAID)
    cancelled = await pay.cancelled("b-1", "cancelled_by_user")
    [refunded] = cancelled.decoded(REFUNDED)
    assert (refunded.booking_id, refunded.payment_id, refunded.reason) == (
        "b-1",
        paid.payment_id,
        "cancelled_by_user",
    )
    assert (refunded.amount_cents, refunded.currency) == (2500, "EUR")
    assert refunded.refund_id.startswith("rfd_") and refunded.provider_refund_id.startswith("re_")
    assert (cancelled.emitted[0].subject, cancelled.emitted[0].causation_id) == (
        "payment.refunded",
        cancelled.envelope.id,
    )
    again = await pay.cancelled("b-1", "cancelled_by_user")  # another fact about the same cancellation
    assert facts(again) == []
    assert await pay.ledger("b-1") == (1, 1)
    row: Any = await pay.payment("b-1")
    assert (row.refund_id, row.refund_reason) == (refunded.refund_id, "cancelled_by_user")


async def test_cancelled_between_the_charge_and_its_commit_is_refunded_on_the_retry(
    pay: PaymentUnderTest,
) -> None:
    await pay.created("b-1")
    cancelled: list[Handled] = []

    async def cancel_now() -> None:
        cancelled.append(await pay.cancelled("b-1", "payment_timeout"))

    pay.provider.after_charge = cancel_now  # the provider charged; the cancellation commits first
    with pytest.raises(TransientError, match="retry refunds"):
        await pay.reserved("b-1", event_id="ev-reserved")
    # The cancellation's own refund found the charge already; the charge was not recorded yet.
    assert (facts(*cancelled), await pay.ledger("b-1")) == ([], (1, 1))
    assert await pay.payment("b-1") is None
    retry = await pay.reserved("b-1", event_id="ev-reserved")  # JetStream redelivers it
    assert facts(retry) == ["PaymentSucceeded", "PaymentRefunded"]
    [paid], [refunded] = retry.decoded(PAID), retry.decoded(REFUNDED)
    assert (refunded.payment_id, refunded.reason) == (paid.payment_id, "payment_timeout")
    assert await pay.ledger("b-1") == (1, 1)
    assert facts(await pay.reserved("b-1"), await pay.cancelled("b-1", "payment_timeout")) == []


async def test_a_charge_recorded_after_the_cancellation_asked_for_its_refund_is_refunded_on_the_retry(
    pay: PaymentUnderTest,
) -> None:
    await pay.created("b-1")
    charged: list[Handled] = []

    async def charge_now() -> None:
        charged.append(await pay.reserved("b-1"))

    pay.provider.after_refund = charge_now  # nothing to refund yet; then the charge commits first
    with pytest.raises(TransientError, match="retry refunds"):
        await pay.cancelled("b-1", event_id="ev-cancelled")
    assert facts(*charged) == ["PaymentSucceeded"]
    assert await pay.ledger("b-1") == (1, 0)
    retry = await pay.cancelled("b-1", event_id="ev-cancelled")
    [refunded] = retry.decoded(REFUNDED)
    assert refunded.payment_id == charged[0].decoded(PAID)[0].payment_id
    assert await pay.ledger("b-1") == (1, 1)


async def test_duplicated_facts_charge_once_and_refund_once(pay: PaymentUnderTest) -> None:
    handled = [
        await pay.created("b-1", event_id="ev-created"),
        await pay.created("b-1", event_id="ev-created"),  # redelivered: the inbox
        await pay.created("b-1"),  # another fact about the same booking
        await pay.reserved("b-1", event_id="ev-reserved"),
        await pay.reserved("b-1", event_id="ev-reserved"),
        await pay.reserved("b-1"),
        await pay.cancelled("b-1", event_id="ev-cancelled"),
        await pay.cancelled("b-1", event_id="ev-cancelled"),
        await pay.cancelled("b-1"),
        await pay.reserved("b-1"),
        await pay.created("b-1"),
    ]
    assert facts(*handled) == ["PaymentSucceeded", "PaymentRefunded"]
    assert await pay.ledger("b-1") == (1, 1)


async def test_a_reservation_before_its_booking_created_is_retried_until_it_is_recorded(
    pay: PaymentUnderTest,
) -> None:
    with pytest.raises(TransientError, match="not recorded yet"):
        await pay.reserved("b-1", event_id="ev-reserved")
    assert await pay.ledger("b-1") == (0, 0)
    await pay.created("b-1")
    retry = await pay.reserved("b-1", event_id="ev-reserved")
    assert facts(retry) == ["PaymentSucceeded"]


async def test_a_declined_payment_is_not_refunded(pay: PaymentUnderTest) -> None:
    await pay.created("b-1", "tok_chargeDeclined")
    [failed] = (await pay.reserved("b-1")).decoded(FAILED)
    assert failed.reason == "card_declined"
    cancelled = await pay.cancelled("b-1", "card_declined")
    assert facts(cancelled) == []
    assert await pay.ledger("b-1") == (1, 0)


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"source": "booking"}, "not 'inventory'"),
        ({"quantity": 3}, "reserved 3 of 'room-1', but it asks for 2"),
        ({"resource_id": "room-9"}, "reserved 2 of 'room-9'"),
    ],
    ids=["not-inventory", "other-quantity", "other-resource"],
)
async def test_a_reservation_that_is_not_the_requests_is_refused_and_not_charged(
    pay: PaymentUnderTest, changes: dict[str, Any], says: str
) -> None:
    await pay.created("b-1", quantity=2)
    with pytest.raises(PermanentError, match=says):
        await pay.reserved("b-1", **{"quantity": 2, **changes})
    assert await pay.ledger("b-1") == (0, 0)
    assert await pay.payment("b-1") is None


async def test_a_resource_booking_whose_token_does_not_open_is_refused_when_it_is_created(
    pay: PaymentUnderTest,
) -> None:
    with pytest.raises(PermanentError, match="sealed for another booking"):
        await pay.on_booking.deliver(
            booking_events.BookingCreated(
                booking_id="b-1",
                amount_cents=100,
                currency="EUR",
                resource_id="room-1",
                quantity=1,
                sealed_payment_token=SESSION_SEALER.seal("tok_visa", bound_to="b-other"),
            )
        )
    assert await pay.sealed_token("b-1") is None


async def test_tokens_are_never_logged(pay: PaymentUnderTest, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        await pay.created("b-1", "tok_chargeDeclinedInsufficientFunds")
        await pay.reserved("b-1")
        await pay.created("b-2", "tok_chargeDeclinedInsufficientFunds", resource_id="")
        await pay.cancelled("b-1")
        await pay.cancelled("b-3")
        await pay.created("b-3", "tok_chargeDeclinedInsufficientFunds")
    assert "booking b-3" in caplog.text  # something was logged
    assert "tok_" not in caplog.text


async def test_charges_and_cancellations_in_any_interleaving_keep_the_rules(pay: PaymentUnderTest) -> None:
    """Reservations and cancellations of many bookings at once (on PostgreSQL: truly concurrent)."""
    bookings = [f"b-{i}" for i in range(12)]
    for booking in bookings:
        await pay.created(booking)

    async def until_done(deliver: Any, booking: str, event_id: str) -> Handled:
        while True:
            try:
                return await deliver(booking, event_id=event_id)  # type: ignore[no-any-return]
            except TransientError:
                await asyncio.sleep(0.01)

    runs = await asyncio.gather(
        *(until_done(pay.reserved, b, f"r-{b}") for b in bookings),
        *(until_done(pay.cancelled, b, f"c-{b}") for b in bookings),
    )
    emitted = [fact for run in runs for fact in facts(run)]
    for booking in bookings:
        charges, refunds = await pay.ledger(booking)
        assert charges <= 1 and refunds == charges, booking  # every charge of a cancelled booking refunded
        row: Any = await pay.payment(booking)
        assert (row is not None) == bool(charges), booking  # a charge is recorded, none without one
        if row is not None:
            assert row.refund_id, f"{booking} was charged and not refunded"
    assert emitted.count("PaymentRefunded") == emitted.count("PaymentSucceeded")
    assert sum([(await pay.ledger(b))[0] for b in bookings]) == emitted.count("PaymentSucceeded")


async def test_a_cancellation_not_published_by_booking_refunds_nothing(pay: PaymentUnderTest) -> None:
    created = await pay.created("b-1", resource_id="")
    assert facts(created) == ["PaymentSucceeded"]
    with pytest.raises(PermanentError, match="not 'booking'"):
        await pay.cancelled("b-1", source="notification")
    assert await pay.ledger("b-1") == (1, 0)
    assert await pay.cancellation("b-1") is None


async def test_a_long_reason_is_kept_to_its_column(pay: PaymentUnderTest) -> None:
    """Reasons are short words; a longer one (booking keeps 128 characters) must not poison the fact."""
    await pay.created("b-1", resource_id="")
    cancelled = await pay.cancelled("b-1", "x" * 128)
    [refunded] = cancelled.decoded(REFUNDED)
    assert refunded.reason == "x" * 64
    assert await pay.cancellation("b-1") == "x" * 64
    assert await pay.ledger("b-1") == (1, 1)


@pytest.mark.parametrize("resource_id", ["room-1", ""], ids=["resource", "no-resource"])
async def test_nothing_is_charged_once_the_bookings_pay_by_passed(
    pay: PaymentUnderTest, resource_id: str
) -> None:
    """A backlog older than the payment timeout is not charged and then refunded: it is not charged."""
    past = to_timestamp(now_us() - 1_000_000)
    created = await pay.created("b-1", resource_id=resource_id, pay_by=past)
    late = await pay.reserved("b-1") if resource_id else created
    assert facts(created, late) == []
    assert await pay.ledger("b-1") == (0, 0)
    assert await pay.payment("b-1") is None
    cancelled = await pay.cancelled("b-1", "payment_timeout")  # booking times it out
    assert facts(cancelled) == []
    assert await pay.ledger("b-1") == (0, 0)
    future = to_timestamp(now_us() + 60_000_000)
    in_time = await pay.created("b-2", resource_id=resource_id, pay_by=future)
    charged = await pay.reserved("b-2") if resource_id else in_time
    assert facts(charged) == ["PaymentSucceeded"]
