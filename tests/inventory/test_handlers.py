"""Inventory's routes on SQLite and PostgreSQL (``choreo.testing``): reserve, refuse, release, once each."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from choreo.errors import Failure, PermanentError, classify
from choreo.inbox import inbox_table
from choreo.inventory.v1 import events_pb2 as inventory_events
from choreo.testing import HandlerHarness
from inventory.capacity import set_capacity
from inventory.handlers import ForgedFactError, UnusableFactError
from tests.inventory.conftest import DEFAULT_CAPACITY
from tests.inventory.facts import cancelled, created, reservation_rows, resource_rows

Reserved = inventory_events.InventoryReserved
Failed = inventory_events.InventoryReservationFailed
Released = inventory_events.InventoryReleased


async def capacity(h: HandlerHarness, resource_id: str, units: int) -> None:
    async with h.engine.begin() as conn:
        await set_capacity(conn, resource_id, units, source="inventory")


async def test_a_resource_booking_reserves_its_units(h: HandlerHarness) -> None:
    env = created("b-1", "room-1", 2)
    handled = await h.handle(env)
    [fact] = handled.decoded(Reserved)
    assert (fact.booking_id, fact.resource_id, fact.quantity) == ("b-1", "room-1", 2)
    assert fact.reserved_at.seconds > 0
    [out] = handled.emitted
    assert (out.subject, out.source, out.correlation_id, out.causation_id) == (
        "inventory.reserved",
        "inventory",
        "wf-b-1",
        env.id,
    )
    assert await resource_rows(h.engine) == {"room-1": (DEFAULT_CAPACITY, 2)}
    assert await reservation_rows(h.engine) == {"b-1": ("room-1", "RESERVED", 2, "")}


async def test_a_new_resource_has_the_default_capacity_and_sells_out(h: HandlerHarness) -> None:
    for i in range(DEFAULT_CAPACITY):
        assert (await h.handle(created(f"b-{i}", "room-9"))).decoded(Reserved)
    handled = await h.handle(created("b-last", "room-9"))
    [fact] = handled.decoded(Failed)
    assert (fact.booking_id, fact.resource_id, fact.quantity, fact.reason, fact.available) == (
        "b-last",
        "room-9",
        1,
        "sold_out",
        0,
    )
    assert handled.emitted[0].subject == "inventory.reservation_failed"
    assert await resource_rows(h.engine) == {"room-9": (DEFAULT_CAPACITY, DEFAULT_CAPACITY)}
    assert (await reservation_rows(h.engine))["b-last"] == ("room-9", "REFUSED", 1, "")


async def test_sold_out_says_how_many_units_were_free(h: HandlerHarness) -> None:
    await capacity(h, "hall", 5)
    assert (await h.handle(created("b-1", "hall", 3))).decoded(Reserved)
    [refused] = (await h.handle(created("b-2", "hall", 3))).decoded(Failed)
    assert (refused.reason, refused.available, refused.quantity) == ("sold_out", 2, 3)
    # The refusal took nothing: the two free units are still there, and an exact fit takes them.
    assert (await h.handle(created("b-3", "hall", 2))).decoded(Reserved)
    [again] = (await h.handle(created("b-4", "hall", 1))).decoded(Failed)
    assert again.available == 0
    assert await resource_rows(h.engine) == {"hall": (5, 5)}


async def test_a_set_capacity_wins_over_the_default(h: HandlerHarness) -> None:
    await capacity(h, "suite", 1)
    assert (await h.handle(created("b-1", "suite"))).decoded(Reserved)
    assert (await h.handle(created("b-2", "suite"))).decoded(Failed)
    assert await resource_rows(h.engine) == {"suite": (1, 1)}


async def test_a_booking_without_a_resource_is_none_of_inventorys_business(h: HandlerHarness) -> None:
    handled = await h.handle(created("b-1", ""))
    assert handled.emitted == ()
    assert await resource_rows(h.engine) == {}
    assert await reservation_rows(h.engine) == {}
    # Nor its cancellation: no tombstone, nothing released.
    assert (await h.handle(cancelled("b-1", ""))).emitted == ()
    assert await reservation_rows(h.engine) == {}


async def test_a_cancellation_releases_the_units_once(h: HandlerHarness) -> None:
    await h.handle(created("b-1", "room-1", 3))
    env = cancelled("b-1", "room-1", "cancelled_by_user")
    handled = await h.handle(env)
    [fact] = handled.decoded(Released)
    assert (fact.booking_id, fact.resource_id, fact.quantity, fact.reason) == (
        "b-1",
        "room-1",
        3,
        "cancelled_by_user",
    )
    assert (handled.emitted[0].subject, handled.emitted[0].causation_id) == ("inventory.released", env.id)
    assert await resource_rows(h.engine) == {"room-1": (DEFAULT_CAPACITY, 0)}
    # The same fact again (the inbox), and the same cancellation under a new id (the guarded row):
    assert (await h.handle(env)).duplicate
    assert (await h.handle(cancelled("b-1", "room-1", "payment_timeout"))).emitted == ()
    assert await resource_rows(h.engine) == {"room-1": (DEFAULT_CAPACITY, 0)}
    assert await reservation_rows(h.engine) == {"b-1": ("room-1", "RELEASED", 3, "cancelled_by_user")}
    # The units are free for the next booking.
    assert (await h.handle(created("b-2", "room-1", DEFAULT_CAPACITY))).decoded(Reserved)


async def test_a_cancellation_without_resource_id_still_releases_a_reservation(h: HandlerHarness) -> None:
    await h.handle(created("b-1", "room-1", 2))
    [fact] = (await h.handle(cancelled("b-1", ""))).decoded(Released)
    assert (fact.resource_id, fact.quantity) == ("room-1", 2)
    assert await resource_rows(h.engine) == {"room-1": (DEFAULT_CAPACITY, 0)}


async def test_a_refused_booking_releases_nothing_when_cancelled(h: HandlerHarness) -> None:
    await capacity(h, "room-1", 1)
    await h.handle(created("b-1", "room-1"))
    assert (await h.handle(created("b-2", "room-1"))).decoded(Failed)
    assert (await h.handle(cancelled("b-2", "room-1", "sold_out"))).emitted == ()
    assert await resource_rows(h.engine) == {"room-1": (1, 1)}  # b-1's unit is still reserved
    assert (await reservation_rows(h.engine))["b-2"] == ("room-1", "REFUSED", 1, "")


async def test_a_booking_cancelled_before_it_was_seen_never_reserves(h: HandlerHarness) -> None:
    handled = await h.handle(cancelled("b-1", "room-1", "payment_timeout"))
    assert handled.emitted == ()
    assert await reservation_rows(h.engine) == {"b-1": ("room-1", "CANCELLED", 0, "payment_timeout")}
    # Its BookingCreated, late: nothing is reserved, nothing published.
    assert (await h.handle(created("b-1", "room-1", 2))).emitted == ()
    assert await resource_rows(h.engine) == {"room-1": (DEFAULT_CAPACITY, 0)}
    # And a second cancellation finds nothing to release.
    assert (await h.handle(cancelled("b-1", "room-1"))).emitted == ()
    assert await reservation_rows(h.engine) == {"b-1": ("room-1", "CANCELLED", 0, "payment_timeout")}


async def test_a_repeated_booking_created_reserves_once(h: HandlerHarness) -> None:
    env = created("b-1", "room-1", 2)
    assert (await h.handle(env)).decoded(Reserved)
    assert (await h.handle(env, stream_sequence=2)).duplicate
    # A copy past the inbox (a new event id): the reservation row makes it a no-op.
    copy = created("b-1", "room-1", 2)
    assert (await h.handle(copy)).emitted == ()
    assert await resource_rows(h.engine) == {"room-1": (DEFAULT_CAPACITY, 2)}
    async with h.engine.connect() as conn:
        seen = {r[0] for r in await conn.execute(select(inbox_table.c.event_id))}
    assert seen == {env.id, copy.id}


@pytest.mark.parametrize("make", [created, cancelled], ids=["created", "cancelled"])
async def test_a_fact_not_published_by_booking_is_refused(h: HandlerHarness, make: object) -> None:
    assert (await h.handle(created("b-1", "room-1", 2))).decoded(Reserved)
    forged = make("b-1", "room-1", source="mallory")  # type: ignore[operator]
    with pytest.raises(ForgedFactError, match="ce-source 'mallory'") as caught:
        await h.handle(forged)
    assert classify(caught.value) is Failure.PERMANENT
    assert await resource_rows(h.engine) == {"room-1": (DEFAULT_CAPACITY, 2)}
    assert await reservation_rows(h.engine) == {"b-1": ("room-1", "RESERVED", 2, "")}


async def test_a_forged_booking_created_reserves_nothing(h: HandlerHarness) -> None:
    with pytest.raises(ForgedFactError):
        await h.handle(created("b-1", "room-1", source="payment"))
    assert await resource_rows(h.engine) == {}
    assert await reservation_rows(h.engine) == {}


@pytest.mark.parametrize(
    ("booking_id", "resource_id", "quantity", "why"),
    [
        ("b-1", "room 1", 1, "resource_id 'room 1'"),
        ("b-1", "r" * 65, 1, "resource_id"),
        ("b-1", "room-1", 0, "quantity 0"),
        ("b-1", "room-1", -2, "quantity -2"),
        ("", "room-1", 1, "booking id ''"),
    ],
)
async def test_a_fact_inventory_cannot_record_is_refused(
    h: HandlerHarness, booking_id: str, resource_id: str, quantity: int, why: str
) -> None:
    env = created(booking_id, resource_id, quantity)
    with pytest.raises(UnusableFactError, match=why):
        await h.handle(env)
    assert await reservation_rows(h.engine) == {}


async def test_a_cancellation_naming_another_resource_releases_nothing(h: HandlerHarness) -> None:
    await h.handle(created("b-1", "room-1", 2))
    with pytest.raises(PermanentError, match="reserved 'room-1'"):
        await h.handle(cancelled("b-1", "room-2"))
    assert await resource_rows(h.engine) == {"room-1": (DEFAULT_CAPACITY, 2)}
    assert (await reservation_rows(h.engine))["b-1"][1] == "RESERVED"


async def test_a_capacity_lowered_below_the_reserved_units_refuses_until_released(h: HandlerHarness) -> None:
    await h.handle(created("b-1", "room-1", 3))
    await capacity(h, "room-1", 2)  # taken out of sale: b-1 keeps its 3 units
    [refused] = (await h.handle(created("b-2", "room-1"))).decoded(Failed)
    assert refused.available == 0
    assert (await h.handle(cancelled("b-1", "room-1"))).decoded(Released)
    assert await resource_rows(h.engine) == {"room-1": (2, 0)}
    assert (await h.handle(created("b-3", "room-1", 2))).decoded(Reserved)
