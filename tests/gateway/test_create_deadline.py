"""A create the gateway gave up on is never committed later (issue 8, defect 7).

The real booking service (a process of its own) runs behind a real gateway; its
database is write-locked by another connection, so the commands it takes block
(the first inside its batch's transaction, the next ones behind it). The gateway answers UNAVAILABLE at its
timeout; once the lock goes, the booking service must drop them instead of
creating bookings (and charges) nobody is waiting for.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import grpc
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from booking.tables import bookings
from choreo.bus import ensure_stream
from choreo.db import make_engine
from choreo.gateway.v1 import gateway_pb2 as gw
from choreo.gateway.v1 import gateway_pb2_grpc
from choreoctl.stack.natsserver import NatsServer
from tests.e2e.stack import Stack
from tests.gateway.conftest import StartGateway
from tests.streams import BOOKING_STREAM, PAYMENT
from tests.support import eventually, row_count, stream_count


def _request(i: int, key: str = "") -> gw.CreateBookingRequest:
    return gw.CreateBookingRequest(
        user_id=f"u{i}", amount_cents=100 + i, currency="USD", payment_token="tok_visa", idempotency_key=key
    )


@asynccontextmanager
async def write_locked(database_url: str) -> AsyncIterator[None]:
    """Holds the booking database's write lock (SQLite) or the bookings table (PostgreSQL)."""
    if database_url.startswith("sqlite"):
        conn = sqlite3.connect(database_url.split(":///", 1)[1], isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            conn.execute("ROLLBACK")
            conn.close()
        return
    pg = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        async with pg.transaction():
            await pg.execute("LOCK TABLE bookings IN EXCLUSIVE MODE")
            yield
    finally:
        await pg.close()


async def booking_rows(database_url: str) -> int:
    engine = make_engine(database_url, writer=False)
    try:
        return await row_count(engine, bookings)
    finally:
        await engine.dispose()


async def test_a_create_the_gateway_gave_up_on_is_not_committed_later(
    nats_server: NatsServer,
    database_url: str,
    sqlite_url: str,
    start_gateway: StartGateway,
    nc: NATS,
    js: JetStreamContext,
    tmp_path: Path,
) -> None:
    await ensure_stream(js, PAYMENT)
    stack = Stack(tmp_path, nats_server.url, database_urls={"booking": database_url})
    await asyncio.to_thread(stack.start, "booking")
    try:
        gateway = await start_gateway(sqlite_url, command_timeout_seconds=1.0)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
            stub = gateway_pb2_grpc.BookingGatewayServiceStub(channel)
            assert (await stub.CreateBooking(_request(0))).booking.booking_id  # the service works

            async with write_locked(database_url):
                # The first blocks inside its batch's transaction, the others wait in the queue.
                calls = [asyncio.ensure_future(stub.CreateBooking(_request(1), timeout=10))]
                await asyncio.sleep(0.2)
                calls += [
                    asyncio.ensure_future(stub.CreateBooking(_request(2, key="client-key"), timeout=10)),
                    asyncio.ensure_future(stub.CreateBooking(_request(3), timeout=0.6)),
                ]
                results = await asyncio.gather(*calls, return_exceptions=True)
                await asyncio.sleep(0.5)  # hold the lock past every deadline
            for result in results:
                assert isinstance(result, grpc.aio.AioRpcError), result
                assert result.code() == grpc.StatusCode.UNAVAILABLE, result
            no_key, with_key, short = (str(r.details()) for r in results if isinstance(r, BaseException))
            # Without a key of its own, the client is told the key the gateway sent on its behalf.
            assert "idempotency_key" in no_key and "gw-" in no_key, no_key
            assert "client-key" in with_key, with_key
            # The gRPC call's own deadline (0.6 s) is shorter than the gateway's timeout (1 s): it wins.
            # What was left of it when the call reached the gateway depends on the machine's load.
            waited = re.search(r"within ([0-9.]+)s", short)
            assert waited is not None and 0 < float(waited.group(1)) <= 0.6, short

            await asyncio.sleep(1.0)  # the booking service catches up with what it had taken
            assert await booking_rows(database_url) == 1, "a create the gateway gave up on was committed"
            assert (await stub.CreateBooking(_request(4))).booking.booking_id  # and it still works
            assert await booking_rows(database_url) == 2

        async def two_facts() -> bool:
            return await stream_count(js, BOOKING_STREAM) == 2

        await eventually(two_facts)
    finally:
        await asyncio.to_thread(stack.stop)
