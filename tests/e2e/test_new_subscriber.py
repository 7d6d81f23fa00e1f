"""A new service joins by subscribing: nothing in booking, payment or the gateway changes.

This is the point of choreography. The "audit" service below is written
against the contracts (proto/) and the runtime (choreo/) only: its own durable
consumer on the BOOKING stream, its own database (with its table's revisions), its own handler. The running
services are the same processes as in every other end-to-end test.
"""

from __future__ import annotations

from pathlib import Path

import grpc
from sqlalchemy import Column, MetaData, String, Table, insert, select

from choreo.booking.v1 import events_pb2 as booking_events
from choreo.gateway.v1 import gateway_pb2_grpc
from choreo.handler import HandlerContext, Route
from choreo.runtime import open_runtime
from choreo.schema import Migrations
from choreo.settings import ConsumerSettings
from choreo.topology import Subscription, Topology
from tests.e2e.client import EXPECTED, request, wait_terminal
from tests.e2e.stack import Stack
from tests.support import eventually

_metadata = MetaData()
outcomes = Table(
    "audit_outcomes",
    _metadata,
    Column("booking_id", String(64), primary_key=True),
    Column("outcome", String(32), nullable=False),
    Column("correlation_id", String(64), nullable=False),
)


#: Its table's revisions: its own Alembic branch, next to the runtime's in its database.
MIGRATIONS = Migrations("audit", Path(__file__).parent / "audit_versions", (outcomes,))


async def on_confirmed(event: booking_events.BookingConfirmed, ctx: HandlerContext) -> None:
    await ctx.conn.execute(
        insert(outcomes).values(
            booking_id=event.booking_id, outcome="confirmed", correlation_id=ctx.envelope.correlation_id
        )
    )


async def on_cancelled(event: booking_events.BookingCancelled, ctx: HandlerContext) -> None:
    await ctx.conn.execute(
        insert(outcomes).values(
            booking_id=event.booking_id, outcome=event.reason, correlation_id=ctx.envelope.correlation_id
        )
    )


#: Its consumer of booking outcomes: stream and subjects come from the routes' types (the contract).
OUTCOMES = Subscription(
    "audit",
    (
        Route(booking_events.BookingConfirmed, on_confirmed),
        Route(booking_events.BookingCancelled, on_cancelled),
    ),
)
TOPOLOGY = Topology(service="audit", subscriptions=(OUTCOMES,))


async def test_an_audit_service_joins_without_touching_the_others(stack: Stack, tmp_path: Path) -> None:
    settings = ConsumerSettings(
        service_name="audit",
        nats_url=stack.nats_url,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'audit.db'}",
        log_format="text",
    )
    # It publishes nothing (yet), so it owns no stream; it only reads BOOKING.
    rt = await open_runtime(settings, TOPOLOGY, migrations=MIGRATIONS)
    consumer = rt.consumer(OUTCOMES)
    service = rt.service([consumer])
    await service.start()
    try:
        async with grpc.aio.insecure_channel(stack.grpc_target) as channel:
            stub = gateway_pb2_grpc.BookingGatewayServiceStub(channel)
            created = {tok: (await stub.CreateBooking(request(tok))).booking for tok in EXPECTED}
            for booking in created.values():
                await wait_terminal(stub, booking.booking_id)

        async def seen() -> dict[str, tuple[str, str]]:
            async with rt.engine.connect() as conn:
                rows = (await conn.execute(select(outcomes))).all()
            return (
                {r.booking_id: (r.outcome, r.correlation_id) for r in rows}
                if len(rows) == len(EXPECTED)
                else {}
            )

        got = await eventually(seen, timeout=15)
    finally:
        await service.stop(grace=5)
    for tok, booking in created.items():
        _, reason = EXPECTED[tok]
        assert got[booking.booking_id] == (reason or "confirmed", booking.correlation_id)
