"""Recovery by replay: booking and payment lose their databases and rebuild the same rows."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest
from nats.js import JetStreamContext
from sqlalchemy import select, text

from booking.tables import bookings
from choreo.db import make_engine
from choreo.gateway.v1 import gateway_pb2 as gw
from choreo.gateway.v1 import gateway_pb2_grpc
from choreo.inbox import inbox_table
from choreoctl.stack.natsserver import NatsServer
from payment.simulator import ledger
from payment.tables import payments
from tests.conftest import make_database_url
from tests.e2e.client import EXPECTED, request
from tests.e2e.stack import SERVICES, Stack
from tests.support import eventually

pytestmark = pytest.mark.slow

TOTAL = 1000
WORKERS = ("booking", "payment")


async def _rows(url: str, table: Any) -> list[dict[str, Any]]:
    engine = make_engine(url, writer=False)
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(select(table).order_by(*table.primary_key.columns))).mappings().all()
            await conn.rollback()
    finally:
        await engine.dispose()
    return [dict(r) for r in rows]


async def _state(stack: Stack) -> dict[str, Any]:
    inbox = {
        name: [(r["consumer"], r["event_id"]) for r in await _rows(stack.database_urls[name], inbox_table)]
        for name in WORKERS
    }
    return {
        "bookings": await _rows(stack.database_urls["booking"], bookings),
        "payments": await _rows(stack.database_urls["payment"], payments),
        "inbox": inbox,
    }


async def _pending(stack: Stack) -> int:
    engine = make_engine(stack.database_urls["booking"], writer=False)
    try:
        async with engine.connect() as conn:
            n = (
                await conn.execute(text("SELECT count(*) FROM bookings WHERE status = 'PENDING'"))
            ).scalar_one()
            await conn.rollback()
    finally:
        await engine.dispose()
    return int(n)


async def _drop_database(url: str) -> None:
    """Loses the service's database, as a lost disk would."""
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[1]
        for suffix in ("", "-wal", "-shm"):
            await asyncio.to_thread(Path(path + suffix).unlink, missing_ok=True)
        return
    engine = make_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("DROP SCHEMA public CASCADE"))
            await conn.execute(text("CREATE SCHEMA public"))
    finally:
        await engine.dispose()


async def _stream_counts(js: JetStreamContext) -> dict[str, int]:
    return {name: (await js.stream_info(name)).state.messages for name in ("BOOKING", "PAYMENT", "DLQ")}


async def _charges(stack: Stack) -> int:
    return len(await _rows(stack.ledger_url, ledger))


async def _book(stub: gateway_pb2_grpc.BookingGatewayServiceStub) -> list[gw.Booking]:
    tokens = list(EXPECTED)
    created: list[gw.Booking] = []

    async def worker(w: int) -> None:
        for i in range(w, TOTAL, 32):
            key = f"rec-{i}" if i % 2 == 0 else ""
            reply = await stub.CreateBooking(
                request(tokens[i % len(tokens)], user=f"u{i % 7}", key=key), timeout=30
            )
            created.append(reply.booking)

    await asyncio.gather(*(worker(w) for w in range(32)))
    return created


async def _run(stack: Stack, js: JetStreamContext, *, by_command: bool) -> None:
    async with grpc.aio.insecure_channel(stack.grpc_target) as channel:
        stub = gateway_pb2_grpc.BookingGatewayServiceStub(channel)
        created = await _book(stub)
        assert len(created) == TOTAL
        await eventually(lambda: _pending_is_zero(stack), timeout=120)

        for name in WORKERS:
            assert stack.terminate(name) == 0
        lost = await _state(stack)
        streams, charges = await _stream_counts(js), await _charges(stack)
        assert len(lost["bookings"]) == TOTAL and len(lost["payments"]) == TOTAL
        cancelled = sum(1 for b in lost["bookings"] if b["status"] == "CANCELLED")
        # Booking's inbox: each payment outcome. Payment's: each BookingCreated, and each
        # BookingCancelled (declined: payment records the cancellation, refunds nothing).
        assert len(lost["inbox"]["booking"]) == TOTAL
        assert len(lost["inbox"]["payment"]) == TOTAL + cancelled

        for name in WORKERS:
            await _drop_database(stack.database_urls[name])
        if by_command:
            for name in WORKERS:
                _recover_command(stack, name)
        await asyncio.to_thread(stack.start, *WORKERS, timeout=120)

        rebuilt = await _state(stack)
        assert rebuilt["bookings"] == lost["bookings"]
        assert rebuilt["payments"] == lost["payments"]
        assert sorted(rebuilt["inbox"]["booking"]) == sorted(lost["inbox"]["booking"])
        # A cancellation that refunded nothing published no payment fact, so replay cannot give
        # its inbox entry back: were it redelivered, the provider would refund nothing again.
        assert set(rebuilt["inbox"]["payment"]) <= set(lost["inbox"]["payment"])
        assert len(set(lost["inbox"]["payment"]) - set(rebuilt["inbox"]["payment"])) == cancelled
        await asyncio.sleep(1.0)  # a wrong rebuild would publish or charge within this
        assert await _stream_counts(js) == streams, "the rebuild published facts"
        assert await _charges(stack) == charges, "the rebuild charged"

        # The rebuilt service keeps its promises: a retried key is the same booking, new ones flow.
        tokens = list(EXPECTED)
        again = await stub.CreateBooking(request(tokens[2 % len(tokens)], user="u2", key="rec-2"), timeout=10)
        first = next(b for b in created if b.booking_id == again.booking.booking_id)
        assert again.booking.booking_id == first.booking_id
        fresh = await stub.CreateBooking(request("tok_visa", user="after"), timeout=10)
        await eventually(lambda: _pending_is_zero(stack), timeout=30)
        assert fresh.booking.booking_id not in {b.booking_id for b in created}
        assert await _charges(stack) == charges + 1


async def _pending_is_zero(stack: Stack) -> bool:
    return await _pending(stack) == 0


def _recover_command(stack: Stack, name: str) -> None:
    """``choreo recover NAME`` with the service's own environment."""
    done = subprocess.run(
        [sys.executable, "-m", "choreoctl", "recover", name],
        env=stack.environment(name),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "rebuilt" in done.stdout, done.stdout


async def test_lost_databases_are_rebuilt_by_replay_at_start(
    nats_server: NatsServer, tmp_path: Path, js: JetStreamContext
) -> None:
    stack = Stack(tmp_path, nats_server.url)
    try:
        stack.start()
        await _run(stack, js, by_command=False)
    finally:
        stack.stop()


async def test_choreo_recover_rebuilds_on_postgres(
    nats_server: NatsServer, tmp_path: Path, js: JetStreamContext
) -> None:
    gens = [make_database_url("postgres", tmp_path) for _ in SERVICES]
    urls = {name: await anext(gen) for name, gen in zip(SERVICES, gens, strict=True)}
    stack = Stack(tmp_path, nats_server.url, database_urls=urls)
    try:
        stack.start()
        await _run(stack, js, by_command=True)
    finally:
        stack.stop()
        for gen in gens:
            with pytest.raises(StopAsyncIteration):
                await anext(gen)
