"""Wiring of the booking service."""

from __future__ import annotations

from booking.create import CreateBookingHandler
from booking.handlers import DURABLE, ROUTES
from booking.migrations import MIGRATIONS
from booking.recovery import RECOVERY
from booking.settings import BookingSettings
from choreo.commands import CommandServer
from choreo.runtime import open_runtime
from choreo.service import Service
from choreo.subjects import BOOKING_STREAM, CMD_CREATE_BOOKING, PAYMENT_STREAM


async def build(settings: BookingSettings) -> Service:
    """Assembles the booking service: command server, payment consumer, outbox relay."""
    sealer = settings.token_sealer()  # refuses to start without the key, before touching anything
    # Booking keeps the DLQ's configuration (its NATS user alone may update it, auth.conf).
    rt = await open_runtime(
        settings, own_stream=BOOKING_STREAM, migrations=MIGRATIONS, recovery=RECOVERY, owns_dlq=True
    )
    creator = CreateBookingHandler(
        rt.engine, settings.service_name, rt.relay.notify, rt.stages, sealer=sealer
    )
    commands = CommandServer(
        rt.nc, CMD_CREATE_BOOKING, queue="booking", handler=creator, max_batch=settings.command_batch_size
    )
    payments = rt.consumer(stream=PAYMENT_STREAM, durable=DURABLE, subjects=["payment.>"], routes=ROUTES)
    return rt.service([commands, payments])
