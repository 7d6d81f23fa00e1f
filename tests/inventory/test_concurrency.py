"""Never over-reserved: replicas reserving one resource at once on one PostgreSQL database.

Each replica is a harness with its own engine (its own connections), and every booking is
handled in its own transaction, all at the same time. Each transaction holds its locks a
moment after reserving (as a batch of a real consumer would, with its other facts), so the
others really wait for the resource's row and must re-check the guard against what
committed: a read-then-write reservation would let them all see the same free units.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from choreo.db import make_engine
from choreo.envelope import Envelope
from choreo.handler import HandlerContext, Route
from choreo.inventory.v1 import events_pb2 as inventory_events
from choreo.testing import Handled, HandlerHarness
from inventory.capacity import set_capacity
from inventory.handlers import DURABLE, Inventory, routes
from inventory.tables import reservations
from tests.conftest import make_database_url
from tests.inventory.facts import cancelled, created, inventory_database, resource_rows

REPLICAS = 6
#: How long each transaction keeps its locks after reserving.
HOLD_SECONDS = 0.02


@pytest.fixture
async def pg_url(tmp_path: Path) -> AsyncIterator[str]:
    async for url in make_database_url("postgres", tmp_path):
        yield url


def slow_routes(inventory: Inventory) -> list[Route[Any]]:
    """Inventory's routes, each transaction held open a moment after the handler ran."""

    def held(route: Route[Any]) -> Route[Any]:
        async def handle(message: Any, ctx: HandlerContext) -> None:
            await route.handle(message, ctx)
            await asyncio.sleep(random.uniform(0, HOLD_SECONDS))

        return Route(route.message_type, handle, emits=route.emits)

    return [held(r) for r in routes(inventory)]


async def replicas(url: str, schema: Path) -> list[HandlerHarness]:
    async with inventory_database(url, schema):
        pass  # the schema, once
    return [
        HandlerHarness(
            make_engine(url, pool_size=10), slow_routes(Inventory(100)), consumer=DURABLE, source="inventory"
        )
        for _ in range(REPLICAS)
    ]


async def handle_everywhere(harnesses: list[HandlerHarness], facts: Sequence[Envelope]) -> list[Handled]:
    """Each fact on one of the replicas (round robin), every one at the same time."""
    return list(
        await asyncio.gather(*(harnesses[i % len(harnesses)].handle(env) for i, env in enumerate(facts)))
    )


async def test_n_plus_one_concurrent_bookings_of_n_units_reserve_exactly_n(pg_url: str, schema: Path) -> None:
    capacity = 24
    harnesses = await replicas(pg_url, schema)
    try:
        async with harnesses[0].engine.begin() as conn:
            await set_capacity(conn, "room-1", capacity, source="inventory")
        handled = await handle_everywhere(
            harnesses, [created(f"b-{i}", "room-1") for i in range(capacity + 1)]
        )
        reserved = [f for h in handled for f in h.decoded(inventory_events.InventoryReserved)]
        failed = [f for h in handled for f in h.decoded(inventory_events.InventoryReservationFailed)]
        assert (len(reserved), len(failed)) == (capacity, 1)
        assert (failed[0].reason, failed[0].available) == ("sold_out", 0)
        assert await resource_rows(harnesses[0].engine) == {"room-1": (capacity, capacity)}
        assert await reserved_units(harnesses[0]) == capacity
    finally:
        for h in harnesses:
            await h.engine.dispose()


async def test_mixed_quantities_bookings_and_cancellations_never_over_reserve(
    pg_url: str, schema: Path
) -> None:
    capacity = 30
    rng = random.Random(12)
    harnesses = await replicas(pg_url, schema)
    try:
        async with harnesses[0].engine.begin() as conn:
            await set_capacity(conn, "hall", capacity, source="inventory")
        # A first wave of bookings, then a second one racing the cancellation of half the first.
        first = [created(f"a-{i}", "hall", rng.randint(1, 4)) for i in range(20)]
        await handle_everywhere(harnesses, first)
        wave = [created(f"b-{i}", "hall", rng.randint(1, 4)) for i in range(20)]
        wave += [cancelled(f"a-{i}", "hall") for i in range(0, 20, 2)]
        rng.shuffle(wave)
        await handle_everywhere(harnesses, wave)
        [(cap, units)] = (await resource_rows(harnesses[0].engine)).values()
        assert cap == capacity
        assert units == await reserved_units(harnesses[0])  # the counter is the sum of its reservations
        assert units <= capacity
        async with harnesses[0].engine.connect() as conn:
            states: dict[str, str] = dict(
                (await conn.execute(select(reservations.c.booking_id, reservations.c.state))).all()
            )
        # Each cancelled booking's units went back (or it had none), each other one kept its state.
        assert {states[f"a-{i}"] for i in range(0, 20, 2)} <= {"RELEASED", "REFUSED"}
        assert {states[f"a-{i}"] for i in range(1, 20, 2)} | {states[f"b-{i}"] for i in range(20)} <= {
            "RESERVED",
            "REFUSED",
        }
    finally:
        for h in harnesses:
            await h.engine.dispose()


async def reserved_units(h: HandlerHarness) -> int:
    async with h.engine.connect() as conn:
        total = await conn.execute(
            select(func.coalesce(func.sum(reservations.c.quantity), 0)).where(
                reservations.c.state == "RESERVED"
            )
        )
        return int(total.scalar_one())
