"""Wiring of the booking service."""

from __future__ import annotations

from booking.create import CreateBookingHandler
from booking.migrations import MIGRATIONS
from booking.recovery import RECOVERY
from booking.settings import BookingSettings
from booking.topology import CREATE, PAYMENTS, TOPOLOGY
from choreo.commands import CommandServer
from choreo.runtime import open_runtime
from choreo.service import Service


async def build(settings: BookingSettings) -> Service:
    """Assembles the booking service: command server, payment consumer, outbox relay."""
    sealer = settings.token_sealer()  # refuses to start without the key, before touching anything
    # Booking keeps the DLQ's configuration (its NATS user alone may update it, auth.conf).
    rt = await open_runtime(settings, TOPOLOGY, migrations=MIGRATIONS, recovery=RECOVERY, owns_dlq=True)
    creator = CreateBookingHandler(
        rt.engine, settings.service_name, rt.relay.notify, rt.stages, sealer=sealer
    )
    commands = CommandServer(
        rt.nc, CREATE.subject, queue=CREATE.queue, handler=creator, max_batch=settings.command_batch_size
    )
    return rt.service([commands, rt.consumer(PAYMENTS)])
