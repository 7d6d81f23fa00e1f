"""``BookingCreated.pay_by``: when the booking times out if still PENDING, announced in the fact.

Payment starts no charge at or after it (a charge then would only be refunded), and
booking's own timeout fires at that time, whatever its setting says now.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from booking.create import CreateRequest, create_bookings
from booking.migrations import MIGRATIONS
from booking.timeouts import PaymentTimeout
from choreo.booking.v1 import commands_pb2
from choreo.booking.v1 import events_pb2 as booking_events
from choreo.clock import from_timestamp, to_timestamp
from choreo.db import make_engine
from choreo.envelope import Envelope
from choreo.errors import Deferred
from choreo.outbox import outbox_table
from choreo.sealing import TokenSealer, parse_public_key
from choreo.testing import prepare_database
from tests.support import TOKEN_PUBLIC_KEY


async def test_a_created_booking_announces_its_pay_by(tmp_path: Path) -> None:
    path = await prepare_database(tmp_path / "booking.db", MIGRATIONS, service="booking")
    engine = make_engine(f"sqlite+aiosqlite:///{path}")
    command = commands_pb2.CreateBookingCommand(
        user_id="u1", amount_cents=100, currency="EUR", payment_token="tok_visa"
    )
    try:
        async with engine.begin() as conn:
            sealer = TokenSealer(parse_public_key(TOKEN_PUBLIC_KEY))
            await create_bookings(
                conn,
                [CreateRequest(command, "wf-1", "cmd-1")],
                "booking",
                sealer,
                payment_timeout_seconds=300,
            )
            row = (await conn.execute(select(outbox_table))).one()
    finally:
        await engine.dispose()
    fact = Envelope.from_headers(row.subject, json.loads(row.headers), row.payload).decode(
        booking_events.BookingCreated
    )
    assert from_timestamp(fact.pay_by) - from_timestamp(fact.created_at) == 300 * 1_000_000


async def test_the_timeout_fires_at_the_announced_pay_by() -> None:
    now = time.time()
    created = to_timestamp(int((now - 10) * 1_000_000))
    # The setting says 1 hour; the fact said 5 s: it is due.
    due = booking_events.BookingCreated(created_at=created, pay_by=to_timestamp(int((now - 5) * 1e6)))
    await PaymentTimeout(3600)(
        due, Envelope.wrap(due, source="booking", subject="booking.created", correlation_id="wf")
    )
    # The setting says 1 s; the fact said in 60 s: not yet.
    later = booking_events.BookingCreated(created_at=created, pay_by=to_timestamp(int((now + 60) * 1e6)))
    with pytest.raises(Deferred) as deferred:
        await PaymentTimeout(1)(
            later, Envelope.wrap(later, source="booking", subject="booking.created", correlation_id="wf")
        )
    assert 55 < deferred.value.seconds <= 60
    # A fact from before pay_by existed: the setting decides.
    old = booking_events.BookingCreated(created_at=created)
    with pytest.raises(Deferred):
        await PaymentTimeout(3600)(
            old, Envelope.wrap(old, source="booking", subject="booking.created", correlation_id="wf")
        )
