"""Wiring of the payment service."""

from __future__ import annotations

from choreo.runtime import open_runtime
from choreo.service import Service
from payment.migrations import MIGRATIONS
from payment.records import Bookings
from payment.recovery import RECOVERY
from payment.settings import PaymentSettings
from payment.simulator import SimulatedProvider
from payment.topology import topology


async def build(settings: PaymentSettings) -> Service:
    """Assembles the payment service: provider, booking and inventory consumers, outbox relay."""
    opener = settings.token_opener()  # refuses to start without the key, before touching anything
    provider = await SimulatedProvider.open(settings.provider_ledger_url, settings.provider_latency_ms / 1000)
    bookings = Bookings()
    declared = topology(provider, opener, bookings)
    rt = await open_runtime(settings, declared, migrations=MIGRATIONS, recovery=RECOVERY)
    bookings.bind(rt.engine)
    service = rt.service([rt.consumer(subscription) for subscription in declared.subscriptions])
    service.on_stop.append(provider.close)
    return service
