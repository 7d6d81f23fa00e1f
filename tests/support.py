"""Test helpers shared across folders: run a service in-process, wait for a condition."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from nats.js import JetStreamContext
from sqlalchemy import Table, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from choreo.envelope import Envelope
from choreo.sealing import generate_keypair
from choreo.service import Service

T = TypeVar("T")

#: This test session's payment-token key pair (base64 private, public), made once per session.
TOKEN_PRIVATE_KEY, TOKEN_PUBLIC_KEY = generate_keypair()
#: The variables that give it to booking and payment, in-process or in a subprocess.
TOKEN_KEY_ENV = {
    "PAYMENT_TOKEN_PRIVATE_KEY": TOKEN_PRIVATE_KEY,
    "BOOKING_PAYMENT_TOKEN_PUBLIC_KEY": TOKEN_PUBLIC_KEY,
}


async def eventually(
    check: Callable[[], Awaitable[T]], *, timeout: float = 10.0, interval: float = 0.05
) -> T:
    """Polls ``check`` until it returns a truthy value; fails with the last value after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met in {timeout}s; last value: {last!r}")


@asynccontextmanager
async def running(service_factory: Awaitable[Service]) -> AsyncIterator[Service]:
    """Builds, starts and (always) stops a service in this event loop."""
    service = await service_factory
    await service.start()
    try:
        yield service
    finally:
        await service.stop(grace=5)


async def stream_count(js: JetStreamContext, stream: str) -> int:
    try:
        return int((await js.stream_info(stream)).state.messages)
    except Exception:
        return 0


async def stream_envelopes(js: JetStreamContext, stream: str) -> list[Envelope]:
    """Every message of a stream, as envelopes, in stream order."""
    info = await js.stream_info(stream)
    out = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await js.get_msg(stream, seq)
        out.append(Envelope.from_headers(msg.subject, msg.headers, msg.data or b""))
    return out


async def publish(js: JetStreamContext, env: Envelope) -> int:
    ack = await js.publish(env.subject, env.data, headers=env.headers())
    return int(ack.seq)


async def row_count(engine: AsyncEngine, table: Table) -> int:
    """How many rows ``table`` holds."""
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())
