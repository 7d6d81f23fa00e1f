"""What the inventory service owns, publishes and consumes (``choreo.topology``).

Inventory owns the INVENTORY stream (``inventory.>``) and publishes its four facts on
it: ``InventoryReserved``, ``InventoryReservationFailed`` and ``InventoryReleased`` from
its consumer, ``InventoryCapacitySet`` from the operator's command (through the
outbox, published by the service's relay). It reacts to ``BookingCreated`` and
``BookingCancelled`` (booking's contract, not booking's code) through the durable
consumer ``inventory`` on BOOKING. Its routes are bound to the default capacity, so
the topology is made by ``topology(...)`` at build.
"""

from __future__ import annotations

from choreo.inventory.v1 import events_pb2 as inventory_events
from choreo.topology import Stream, Subscription, Topology
from inventory.handlers import DURABLE, Inventory, routes

#: The stream inventory owns: every ``inventory.*`` fact.
STREAM = Stream("INVENTORY", ("inventory.>",))

#: Every fact inventory publishes.
PUBLISHES = (
    inventory_events.InventoryReserved,
    inventory_events.InventoryReservationFailed,
    inventory_events.InventoryReleased,
    inventory_events.InventoryCapacitySet,
)


def topology(default_capacity: int) -> Topology:
    """Inventory's topology, its routes giving a new resource ``default_capacity`` units."""
    return Topology(
        service="inventory",
        stream=STREAM,
        publishes=PUBLISHES,
        subscriptions=(Subscription(DURABLE, routes(Inventory(default_capacity))),),
    )
