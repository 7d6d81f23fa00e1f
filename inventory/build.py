"""Wiring of the inventory service."""

from __future__ import annotations

from choreo.runtime import open_runtime
from choreo.service import Service
from inventory.migrations import MIGRATIONS
from inventory.recovery import recovery
from inventory.settings import InventorySettings
from inventory.topology import topology


async def build(settings: InventorySettings) -> Service:
    """Assembles the inventory service: the booking-facts consumer and the outbox relay.

    The relay also publishes the ``InventoryCapacitySet`` facts the operator's command
    (``inventory.cli``) leaves in the outbox.
    """
    declared = topology(settings.default_capacity)
    rt = await open_runtime(
        settings, declared, migrations=MIGRATIONS, recovery=recovery(settings.default_capacity)
    )
    (bookings,) = declared.subscriptions
    return rt.service([rt.consumer(bookings)])
