"""Wiring of the payment service."""

from __future__ import annotations

from choreo.runtime import open_runtime
from choreo.service import Service
from choreo.subjects import BOOKING_CREATED, BOOKING_STREAM, PAYMENT_STREAM
from payment.handlers import DURABLE, routes
from payment.migrations import MIGRATIONS
from payment.recovery import RECOVERY
from payment.settings import PaymentSettings
from payment.simulator import SimulatedProvider


async def build(settings: PaymentSettings) -> Service:
    """Assembles the payment service: provider, booking consumer, outbox relay."""
    opener = settings.token_opener()  # refuses to start without the key, before touching anything
    provider = await SimulatedProvider.open(settings.provider_ledger_url, settings.provider_latency_ms / 1000)
    rt = await open_runtime(settings, own_stream=PAYMENT_STREAM, migrations=MIGRATIONS, recovery=RECOVERY)
    consumer = rt.consumer(
        stream=BOOKING_STREAM, durable=DURABLE, subjects=[BOOKING_CREATED], routes=routes(provider, opener)
    )
    service = rt.service([consumer])
    service.on_stop.append(provider.close)
    return service
