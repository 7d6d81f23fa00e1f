"""Payment's routes on SQLite or PostgreSQL, with a provider whose calls a test can interleave.

``PaymentUnderTest`` delivers facts to both of payment's durables (``payment`` on
BOOKING, ``payment-inventory`` on INVENTORY) the way their consumers would
(``choreo.testing.HandlerHarness``), on one database, and counts the charges and
refunds the simulated provider's ledger holds per booking.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from choreo.booking.v1 import events_pb2 as booking_events
from choreo.db import make_engine
from choreo.inventory.v1 import events_pb2 as inventory_events
from choreo.schema import prepare_schema
from choreo.sealing import TokenOpener, parse_private_keys
from choreo.testing import Handled, HandlerHarness
from payment.handlers import DURABLE, INVENTORY_DURABLE, inventory_routes, routes
from payment.migrations import MIGRATIONS
from payment.provider import ChargeRequest, ChargeResult, RefundRequest, RefundResult
from payment.records import Bookings
from payment.simulator import SimulatedProvider, ledger, refunds_ledger
from payment.tables import cancellations, payment_requests, payments
from tests.conftest import make_database_url
from tests.payment.test_service import SESSION_SEALER
from tests.support import TOKEN_PRIVATE_KEY

Hook = Callable[[], Awaitable[object]]


class HookedProvider:
    """The simulated provider; a test may run something right after one charge or one refund returns.

    That is the window between a route's ``prepare`` (the provider call) and its transaction.
    """

    def __init__(self, provider: SimulatedProvider) -> None:
        self.simulator = provider
        self.after_charge: Hook | None = None
        self.after_refund: Hook | None = None

    async def charge(self, request: ChargeRequest) -> ChargeResult:
        result = await self.simulator.charge(request)
        hook, self.after_charge = self.after_charge, None
        if hook is not None:
            await hook()
        return result

    async def refund(self, request: RefundRequest) -> RefundResult:
        result = await self.simulator.refund(request)
        hook, self.after_refund = self.after_refund, None
        if hook is not None:
            await hook()
        return result

    async def close(self) -> None:
        await self.simulator.close()


class PaymentUnderTest:
    """Payment's two durables on one database, and the ledger of its provider."""

    def __init__(self, engine: AsyncEngine, provider: HookedProvider) -> None:
        self.engine = engine
        self.provider = provider
        opener = TokenOpener(parse_private_keys(TOKEN_PRIVATE_KEY))
        bookings = Bookings(engine)
        self.on_booking = HandlerHarness(
            engine, routes(provider, opener, bookings), consumer=DURABLE, source="payment"
        )
        self.on_inventory = HandlerHarness(
            engine, inventory_routes(provider, opener, bookings), consumer=INVENTORY_DURABLE, source="payment"
        )

    async def created(
        self,
        booking_id: str,
        token: str = "tok_visa",
        *,
        resource_id: str = "room-1",
        quantity: int = 1,
        event_id: str | None = None,
        pay_by: Timestamp | None = None,
    ) -> Handled:
        return await self.on_booking.deliver(
            booking_events.BookingCreated(
                booking_id=booking_id,
                user_id="u1",
                amount_cents=2500,
                currency="EUR",
                sealed_payment_token=SESSION_SEALER.seal(token, bound_to=booking_id),
                resource_id=resource_id,
                quantity=quantity if resource_id else 0,
                pay_by=pay_by,
            ),
            source="booking",
            correlation_id=f"wf-{booking_id}",
            event_id=event_id,
        )

    async def cancelled(
        self,
        booking_id: str,
        reason: str = "cancelled_by_user",
        *,
        event_id: str | None = None,
        source: str = "booking",
    ) -> Handled:
        return await self.on_booking.deliver(
            booking_events.BookingCancelled(booking_id=booking_id, reason=reason, resource_id="room-1"),
            source=source,
            correlation_id=f"wf-{booking_id}",
            event_id=event_id,
        )

    async def reserved(
        self,
        booking_id: str,
        *,
        resource_id: str = "room-1",
        quantity: int = 1,
        source: str = "inventory",
        event_id: str | None = None,
    ) -> Handled:
        return await self.on_inventory.deliver(
            inventory_events.InventoryReserved(
                booking_id=booking_id, resource_id=resource_id, quantity=quantity
            ),
            source=source,
            correlation_id=f"wf-{booking_id}",
            event_id=event_id,
        )

    async def ledger(self, booking_id: str) -> tuple[int, int]:
        """(charges, refunds) the provider's ledger holds for the booking."""
        async with self.provider.simulator._engine.connect() as conn:
            charges = (
                await conn.execute(
                    select(func.count()).select_from(ledger).where(ledger.c.idempotency_key == booking_id)
                )
            ).scalar_one()
            refunds = (
                await conn.execute(
                    select(func.count())
                    .select_from(refunds_ledger)
                    .where(refunds_ledger.c.charge_key == booking_id)
                )
            ).scalar_one()
        return int(charges), int(refunds)

    async def payment(self, booking_id: str) -> object:
        async with self.engine.connect() as conn:
            return (
                await conn.execute(select(payments).where(payments.c.booking_id == booking_id))
            ).one_or_none()

    async def sealed_token(self, booking_id: str) -> bytes | None:
        """The request's sealed token (None: no request recorded)."""
        async with self.engine.connect() as conn:
            query = select(payment_requests.c.sealed_payment_token).where(
                payment_requests.c.booking_id == booking_id
            )
            token = (await conn.execute(query)).scalar_one_or_none()
        return None if token is None else bytes(token)

    async def cancellation(self, booking_id: str) -> str | None:
        async with self.engine.connect() as conn:
            query = select(cancellations.c.reason).where(cancellations.c.booking_id == booking_id)
            reason: str | None = (await conn.execute(query)).scalar_one_or_none()
        return reason


@asynccontextmanager
async def payment_under_test(kind: str, tmp_path: Path) -> AsyncIterator[PaymentUnderTest]:
    """Payment on a fresh database of ``kind`` (sqlite or postgres), its ledger on SQLite."""
    urls = make_database_url(kind, tmp_path)
    url = await anext(urls)
    engine = make_engine(url)
    provider = HookedProvider(await SimulatedProvider.open(f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}"))
    try:
        await prepare_schema(engine, MIGRATIONS, mode="auto", service="payment", setting="(test)")
        yield PaymentUnderTest(engine, provider)
    finally:
        await provider.close()
        await engine.dispose()
        await urls.aclose()  # type: ignore[attr-defined]  # an async generator: drops the database
