"""Facts nobody can forge: a payment fact that disagrees with its booking never settles it.

The booking service runs in-process on its real consumer path (real nats-server,
SQLite and PostgreSQL); each forged fact is published on ``payment.>`` as an
attacker with publish rights there would, and must end in the DLQ at once,
leaving the booking as it was.
"""

from __future__ import annotations

import asyncio

import pytest
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from booking.build import build
from choreo.envelope import Envelope
from choreo.payment.v1 import events_pb2 as payment_events
from choreoctl.stack.natsserver import NatsServer
from tests.booking.test_service import (  # noqa: F401 (payment_stream: an autouse fixture)
    Reply,
    _at_least,
    _status,
    create,
    payment_fact,
    payment_stream,
    settings,
)
from tests.support import eventually, publish, running, stream_count


def succeeded(booking: Reply, **fields: object) -> payment_events.PaymentSucceeded:
    values: dict[str, object] = {
        "payment_id": "pay_forged",
        "booking_id": booking.booking.booking_id,
        "amount_cents": 1200,
        "currency": "USD",
        **fields,
    }
    return payment_events.PaymentSucceeded(**values)  # type: ignore[arg-type]


async def dead_letter_error(js: JetStreamContext) -> str:
    await eventually(lambda: stream_count(js, "DLQ"), timeout=10)
    dead = await js.get_msg("DLQ", 1)
    assert dead.headers is not None
    # Permanent: the first delivery is the last, no retries.
    assert dead.headers["choreo-dlq-deliveries"] == "1"
    assert dead.headers["choreo-dlq-error"].startswith("permanent failure")
    return dead.headers["choreo-dlq-error"]


@pytest.mark.parametrize(
    ("forge", "field"),
    [
        (lambda reply: payment_fact(succeeded(reply, amount_cents=1), booking=reply), "amount_cents"),
        (lambda reply: payment_fact(succeeded(reply, currency="EUR"), booking=reply), "currency"),
        (
            lambda reply: Envelope.wrap(
                succeeded(reply),
                source="gateway",
                subject="payment.succeeded",
                correlation_id=reply.booking.correlation_id,
                causation_id="x",
            ),
            "ce-source",
        ),
        (
            lambda reply: Envelope.wrap(
                succeeded(reply),
                source="payment",
                subject="payment.succeeded",
                correlation_id="someone-elses-workflow",
                causation_id="x",
            ),
            "correlation_id",
        ),
    ],
    ids=["forged-amount", "forged-currency", "wrong-source", "wrong-correlation"],
)
async def test_a_payment_fact_that_disagrees_with_the_booking_is_dead_lettered(
    nats_server: NatsServer,
    database_url: str,
    nc: NATS,
    js: JetStreamContext,
    caplog: pytest.LogCaptureFixture,
    forge: object,
    field: str,
) -> None:
    async with running(build(settings(nats_server, database_url))) as service:
        reply = await create(nc, correlation="wf-forge")
        bid = reply.booking.booking_id
        await publish(js, forge(reply))  # type: ignore[operator]
        error = await dead_letter_error(js)
        assert await _status(service, bid) == ("PENDING", "", "")
    assert "PaymentMismatchError" in error
    assert f"{field} is " in error
    assert bid in error
    assert await stream_count(js, "BOOKING") == 1  # BookingCreated only: nothing confirmed
    [line] = [r for r in caplog.records if r.getMessage().startswith("refused payment fact")]
    assert (line.levelname, line.booking_id, line.field) == ("ERROR", bid, field)  # type: ignore[attr-defined]
    assert "wf-forge" in line.getMessage()


@pytest.mark.parametrize("settled_by", ["failed", "succeeded"])
async def test_a_late_opposite_outcome_never_flips_a_terminal_booking(
    nats_server: NatsServer, database_url: str, nc: NATS, js: JetStreamContext, settled_by: str
) -> None:
    """A forged ``payment.succeeded`` for a declined booking (and the converse) waits in the DLQ."""
    async with running(build(settings(nats_server, database_url))) as service:
        reply = await create(nc, correlation="wf-late")
        bid = reply.booking.booking_id
        first: payment_events.PaymentSucceeded | payment_events.PaymentFailed
        late: payment_events.PaymentSucceeded | payment_events.PaymentFailed
        declined = payment_events.PaymentFailed(
            payment_id="p1", booking_id=bid, reason="card_declined", amount_cents=1200, currency="USD"
        )
        if settled_by == "failed":
            first, late, expected = (
                declined,
                succeeded(reply, payment_id="p2"),
                ("CANCELLED", "p1", "card_declined"),
            )
        else:
            first, late, expected = succeeded(reply, payment_id="p1"), declined, ("CONFIRMED", "p1", "")
            late.payment_id = "p2"
        await publish(js, payment_fact(first, booking=reply))
        await eventually(lambda: _at_least(js, "BOOKING", 2))
        await publish(js, payment_fact(late, booking=reply))
        error = await dead_letter_error(js)
        await asyncio.sleep(0.2)
        assert await _status(service, bid) == expected
    assert "ContradictingPaymentError" in error
    assert expected[0] in error
    if settled_by == "failed":
        assert "refund" in error
    assert await stream_count(js, "BOOKING") == 2
