"""The inventory service: reserves a booking's units of a resource, and frees them when it is cancelled.

It reacts to ``BookingCreated`` with a ``resource_id`` by reserving ``quantity`` units
(``InventoryReserved``), or refusing them (``InventoryReservationFailed``, reason
``sold_out``, with the units that were free); and to ``BookingCancelled``, whatever its
reason, by freeing a reservation once (``InventoryReleased``). A booking without a
resource is none of its business. It owns the INVENTORY stream (``inventory.>``) and
reads BOOKING through its durable consumer ``inventory``.

A resource it has never seen has ``INVENTORY_DEFAULT_CAPACITY`` units (default 100);
an operator sets a resource's capacity with ``python -m inventory capacity set
RESOURCE_ID CAPACITY`` (``inventory.cli``), which commits the change and an
``InventoryCapacitySet`` fact together (the running service's relay publishes it).

It never reserves more than a resource holds, even with several replicas on one
PostgreSQL database: a reservation is one guarded ``UPDATE`` (``inventory.handlers``).
"""
