"""An operator's view and setting of resource capacities, in the inventory database.

Setting a capacity and its ``InventoryCapacitySet`` fact commit in one transaction
(``choreo.outbox.add_to_outbox``): the fact is published (by the running service's
relay) if and only if the capacity changed, and a rebuild by replay of INVENTORY gives
it back (``inventory.recovery``). The units already reserved are kept: a capacity below
them is allowed (the operator takes units out of sale) and only stops new reservations
until enough are released. The command line is ``inventory.cli``.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import Executable

from choreo.clock import to_timestamp
from choreo.contract import fact_subject
from choreo.db import now_us
from choreo.envelope import Envelope
from choreo.ids import new_id
from choreo.inventory.v1 import events_pb2 as inventory_events
from choreo.outbox import add_to_outbox
from choreo.upserts import dialect_insert
from inventory.rules import MAX_CAPACITY, RESOURCE_ID_RULE, is_capacity, is_resource_id
from inventory.tables import resources

_r = resources


@dataclass(frozen=True, slots=True)
class ResourceState:
    """A resource's capacity and reserved units (``known`` False: not seen yet, the default applies)."""

    resource_id: str
    capacity: int
    reserved: int
    known: bool = True

    @property
    def available(self) -> int:
        """Units a booking may still reserve (0 when the capacity was lowered below the reserved units)."""
        return max(0, self.capacity - self.reserved)

    @property
    def over_reserved(self) -> bool:
        return self.reserved > self.capacity


def _set_capacity(dialect: str) -> Executable:
    ins = dialect_insert(_r, dialect)
    return ins.on_conflict_do_update(  # type: ignore[no-any-return]
        index_elements=["resource_id"],
        set_={"capacity": ins.excluded.capacity, "updated_at_us": ins.excluded.updated_at_us},
    )


#: A resource's capacity, its reserved units kept (a new resource has none). Shared with recovery.
SET_CAPACITY = {d: _set_capacity(d) for d in ("sqlite", "postgresql")}
_STATE = select(_r.c.resource_id, _r.c.capacity, _r.c.reserved)
_STATE_OF = _STATE.where(_r.c.resource_id == bindparam("r_id"))


def check(resource_id: str, capacity: int) -> None:
    """Raises ``ValueError`` naming the argument that is not acceptable."""
    if not is_resource_id(resource_id):
        raise ValueError(f"RESOURCE_ID must be {RESOURCE_ID_RULE}, not {resource_id[:80]!r}")
    if not is_capacity(capacity):
        raise ValueError(f"CAPACITY must be a whole number from 0 to {MAX_CAPACITY}, not {capacity}")


async def set_capacity(
    conn: AsyncConnection, resource_id: str, capacity: int, *, source: str
) -> tuple[ResourceState, Envelope]:
    """Sets a resource's capacity and queues its ``InventoryCapacitySet``, in the caller's transaction.

    Args:
        source: ``ce-source`` of the fact (the inventory service's name).

    Returns:
        The resource as it now is, and the fact queued in the outbox.

    Raises:
        ValueError: The resource id or the capacity is not acceptable (``check``).
    """
    check(resource_id, capacity)
    now = now_us()
    await conn.execute(
        SET_CAPACITY[conn.dialect.name],
        {"resource_id": resource_id, "capacity": capacity, "reserved": 0, "updated_at_us": now},
    )
    row = (await conn.execute(_STATE_OF, {"r_id": resource_id})).one()
    fact = inventory_events.InventoryCapacitySet(
        resource_id=resource_id, capacity=capacity, set_at=to_timestamp(now)
    )
    event_id = new_id()
    env = Envelope.wrap(
        fact,
        source=source,
        subject=fact_subject(inventory_events.InventoryCapacitySet),
        correlation_id=event_id,  # an operator's change starts a workflow of its own
        event_id=event_id,
    )
    await add_to_outbox(conn, [env])
    return ResourceState(resource_id, int(row.capacity), int(row.reserved)), env


async def resource_states(
    conn: AsyncConnection, resource_id: str | None, *, default_capacity: int
) -> list[ResourceState]:
    """Every resource, by id; or the one named (with the default capacity when it was never seen)."""
    if resource_id is None:
        rows = await conn.execute(_STATE.order_by(_r.c.resource_id))
        return [ResourceState(r.resource_id, int(r.capacity), int(r.reserved)) for r in rows]
    row = (await conn.execute(_STATE_OF, {"r_id": resource_id})).one_or_none()
    if row is None:
        return [ResourceState(resource_id, default_capacity, 0, known=False)]
    return [ResourceState(row.resource_id, int(row.capacity), int(row.reserved))]
