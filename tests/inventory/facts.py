"""Booking facts as the booking service publishes them, and the inventory database each test starts from."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from choreo.booking.v1 import events_pb2 as booking_events
from choreo.clock import to_timestamp
from choreo.contract import fact_subject
from choreo.db import make_engine, now_us
from choreo.envelope import Envelope
from choreo.schema import prepare_schema
from inventory.migrations import MIGRATIONS
from inventory.tables import reservations, resources

BOOKING_SOURCE = "booking"


def created(
    booking_id: str,
    resource_id: str = "room-1",
    quantity: int = 1,
    *,
    source: str = BOOKING_SOURCE,
    event_id: str | None = None,
) -> Envelope:
    """A ``BookingCreated`` of ``quantity`` units of ``resource_id`` (none when it is empty)."""
    event = booking_events.BookingCreated(
        booking_id=booking_id,
        user_id="u1",
        amount_cents=2500,
        currency="EUR",
        sealed_payment_token=b"sealed",
        created_at=to_timestamp(now_us()),
        resource_id=resource_id,
        quantity=quantity if resource_id else 0,
    )
    return _wrap(event, booking_id, source, event_id)


def cancelled(
    booking_id: str,
    resource_id: str = "room-1",
    reason: str = "card_declined",
    *,
    source: str = BOOKING_SOURCE,
    event_id: str | None = None,
) -> Envelope:
    """A ``BookingCancelled`` of a booking of ``resource_id`` (none when it is empty)."""
    event = booking_events.BookingCancelled(
        booking_id=booking_id,
        reason=reason,
        cancelled_at=to_timestamp(now_us()),
        payment_id=f"pay-{booking_id}",
        resource_id=resource_id,
    )
    return _wrap(event, booking_id, source, event_id)


def _wrap(
    event: booking_events.BookingCreated | booking_events.BookingCancelled,
    booking_id: str,
    source: str,
    event_id: str | None,
) -> Envelope:
    return Envelope.wrap(
        event,
        source=source,
        subject=fact_subject(type(event)),
        correlation_id=f"wf-{booking_id}",
        event_id=event_id,
    )


@asynccontextmanager
async def inventory_database(database_url: str, schema: Path) -> AsyncIterator[AsyncEngine]:
    """Inventory's schema on ``database_url``: a copy of ``schema`` (SQLite), or the revisions run."""
    if database_url.startswith("sqlite"):
        shutil.copyfile(schema, database_url.split(":///", 1)[1])
        engine = make_engine(database_url, synchronous="NORMAL")
    else:
        engine = make_engine(database_url)
        await prepare_schema(
            engine, MIGRATIONS, mode="auto", service="inventory", setting="INVENTORY_MIGRATE"
        )
    try:
        yield engine
    finally:
        await engine.dispose()


async def resource_rows(engine: AsyncEngine) -> dict[str, tuple[int, int]]:
    """Each resource's (capacity, reserved)."""
    async with engine.connect() as conn:
        rows = await conn.execute(select(resources.c.resource_id, resources.c.capacity, resources.c.reserved))
        return {r.resource_id: (int(r.capacity), int(r.reserved)) for r in rows}


async def reservation_rows(engine: AsyncEngine) -> dict[str, tuple[str, str, int, str]]:
    """Each reservation's (resource_id, state, quantity, reason), by booking id."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(
                reservations.c.booking_id,
                reservations.c.resource_id,
                reservations.c.state,
                reservations.c.quantity,
                reservations.c.reason,
            )
        )
        return {r.booking_id: (r.resource_id, r.state, int(r.quantity), r.reason) for r in rows}
