"""How the inventory service rebuilds its database from its own stream (``choreo.recovery``).

Replaying INVENTORY in order gives back the reservations and each resource's reserved
units: ``InventoryReserved`` a RESERVED reservation and its units taken (as the fact
says, without the capacity's guard: it happened), ``InventoryReservationFailed`` a
REFUSED one, ``InventoryReleased`` the reservation RELEASED and its units back,
``InventoryCapacitySet`` the capacity an operator set. The booking fact each handler's
fact reacted to goes back into the inbox of the ``inventory`` consumer, so a
redelivered ``BookingCreated`` is a duplicate, not a second reservation.

What no fact announces, the replay cannot give back:

- the capacity of a resource no operator set is the default when its first fact is
  replayed (``INVENTORY_DEFAULT_CAPACITY`` now, which is the one it got unless the
  setting changed since; a first ``InventoryReservationFailed`` gives it exactly, as
  the units that were free);
- the tombstone of a booking cancelled before its ``BookingCreated`` was handled
  (nothing was published): should that ``BookingCreated`` still be delivered after the
  rebuild, it would reserve units nobody releases.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, bindparam, update

from choreo.clock import from_timestamp
from choreo.inventory.v1 import events_pb2 as inventory_events
from choreo.recovery import Recovery, Restore, RestoreContext
from inventory.capacity import SET_CAPACITY
from inventory.handlers import DURABLE, GIVE_BACK, NEW_RESERVATION, NEW_RESOURCE, RELEASE
from inventory.settings import InventorySettings
from inventory.tables import ReservationState, reservations, resources
from inventory.topology import STREAM

#: The settings ``choreo recover inventory`` reads.
SETTINGS = InventorySettings

#: Units a replayed reservation took (no guard: the fact says they were taken).
_ADD = (
    update(resources)
    .where(resources.c.resource_id == bindparam("r_id"))
    .values(
        reserved=resources.c.reserved + bindparam("r_q", type_=BigInteger), updated_at_us=bindparam("r_now")
    )
)


def _reservation(
    booking_id: str, resource_id: str, quantity: int, state: ReservationState, at_us: int, reason: str = ""
) -> dict[str, Any]:
    return {
        "booking_id": booking_id,
        "resource_id": resource_id,
        "quantity": quantity,
        "state": state.value,
        "reason": reason[:128],
        "created_at_us": at_us,
        "updated_at_us": at_us,
    }


class Restores:
    """The restores of inventory's facts, a new resource getting ``default_capacity`` units."""

    def __init__(self, default_capacity: int) -> None:
        self.default_capacity = default_capacity

    async def _resource(self, ctx: RestoreContext, resource_id: str, capacity: int, at_us: int) -> None:
        await ctx.conn.execute(
            NEW_RESOURCE[ctx.conn.dialect.name],
            {"resource_id": resource_id, "capacity": capacity, "reserved": 0, "updated_at_us": at_us},
        )

    async def reserved(self, event: inventory_events.InventoryReserved, ctx: RestoreContext) -> None:
        at = from_timestamp(event.reserved_at)
        await self._resource(ctx, event.resource_id, self.default_capacity, at)
        row = _reservation(event.booking_id, event.resource_id, event.quantity, ReservationState.RESERVED, at)
        if (await ctx.conn.execute(NEW_RESERVATION[ctx.conn.dialect.name], row)).rowcount:
            await ctx.conn.execute(_ADD, {"r_id": event.resource_id, "r_q": event.quantity, "r_now": at})

    async def failed(self, event: inventory_events.InventoryReservationFailed, ctx: RestoreContext) -> None:
        at = from_timestamp(event.failed_at)
        # A resource whose first fact is a refusal had exactly `available` units.
        await self._resource(ctx, event.resource_id, int(event.available), at)
        row = _reservation(event.booking_id, event.resource_id, event.quantity, ReservationState.REFUSED, at)
        await ctx.conn.execute(NEW_RESERVATION[ctx.conn.dialect.name], row)

    async def released(self, event: inventory_events.InventoryReleased, ctx: RestoreContext) -> None:
        at = from_timestamp(event.released_at)
        moved = (
            await ctx.conn.execute(
                RELEASE, {"b_id": event.booking_id, "b_reason": event.reason[:128], "b_now": at}
            )
        ).one_or_none()
        if moved is not None:
            await ctx.conn.execute(GIVE_BACK, {"r_id": moved.resource_id, "r_q": moved.quantity, "r_now": at})
            return
        # Its reservation is not in the stream (any more): a redelivered BookingCreated must still
        # reserve nothing.
        row = _reservation(
            event.booking_id, event.resource_id, event.quantity, ReservationState.RELEASED, at, event.reason
        )
        await ctx.conn.execute(NEW_RESERVATION[ctx.conn.dialect.name], row)

    async def capacity_set(self, event: inventory_events.InventoryCapacitySet, ctx: RestoreContext) -> None:
        await ctx.conn.execute(
            SET_CAPACITY[ctx.conn.dialect.name],
            {
                "resource_id": event.resource_id,
                "capacity": event.capacity,
                "reserved": 0,
                "updated_at_us": from_timestamp(event.set_at),
            },
        )


def recovery(default_capacity: int) -> Recovery:
    """Inventory's rebuild by replay, a resource first seen in a reservation getting ``default_capacity``."""
    r = Restores(default_capacity)
    return Recovery(
        stream=STREAM.name,
        tables=[resources, reservations],
        restores=[
            Restore(inventory_events.InventoryReserved, r.reserved, handled_by=DURABLE),
            Restore(inventory_events.InventoryReservationFailed, r.failed, handled_by=DURABLE),
            Restore(inventory_events.InventoryReleased, r.released, handled_by=DURABLE),
            # An operator's change, caused by no booking fact.
            Restore(inventory_events.InventoryCapacitySet, r.capacity_set),
        ],
    )


def __getattr__(name: str) -> Any:
    """``RECOVERY`` for ``choreo recover inventory``: with ``INVENTORY_DEFAULT_CAPACITY`` as it is set now.

    Made when asked for, after ``choreo recover`` has read (and checked) the settings.
    """
    if name == "RECOVERY":
        return recovery(SETTINGS().default_capacity)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
