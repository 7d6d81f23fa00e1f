"""Wiring of the booking service."""

from __future__ import annotations

from booking.cancel import CancelBookingHandler
from booking.create import CreateBookingHandler
from booking.migrations import MIGRATIONS
from booking.recovery import RECOVERY
from booking.settings import BookingSettings
from booking.topology import CANCEL, CREATE, INVENTORY, PAYMENTS, timeouts_subscription, topology
from choreo.commands import CommandServer
from choreo.runtime import open_runtime
from choreo.service import Service


async def build(settings: BookingSettings) -> Service:
    """Assembles the booking service: command servers, its three consumers, outbox relay."""
    sealer = settings.token_sealer()  # refuses to start without the key, before touching anything
    timeout = settings.payment_timeout_seconds
    # Booking keeps the DLQ's configuration (its NATS user alone may update it, auth.conf).
    rt = await open_runtime(
        settings, topology(timeout), migrations=MIGRATIONS, recovery=RECOVERY, owns_dlq=True
    )
    creator = CreateBookingHandler(
        rt.engine,
        settings.service_name,
        rt.relay.notify,
        rt.stages,
        sealer=sealer,
        payment_timeout_seconds=timeout,
    )
    canceller = CancelBookingHandler(rt.engine, settings.service_name, rt.relay.notify)
    batch = settings.command_batch_size
    commands = [
        CommandServer(rt.nc, CREATE.subject, queue=CREATE.queue, handler=creator, max_batch=batch),
        CommandServer(rt.nc, CANCEL.subject, queue=CANCEL.queue, handler=canceller, max_batch=batch),
    ]
    consumers = [rt.consumer(s) for s in (PAYMENTS, INVENTORY, timeouts_subscription(timeout))]
    return rt.service([*commands, *consumers])
