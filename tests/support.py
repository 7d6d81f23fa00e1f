"""Test helpers shared across folders: run a service in-process, wait for a condition, publish a fact."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar

import pytest
from nats.js import JetStreamContext
from sqlalchemy import Table, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from choreo.envelope import Envelope
from choreo.schema import Migrations
from choreo.sealing import generate_keypair
from choreo.service import Service
from choreo.testing import prepare_database

T = TypeVar("T")

#: The system's services, each a package, a process and a NATS user of its own.
SERVICES = ("booking", "payment", "gateway")

#: This test session's payment-token key pair (base64 private, public), made once per session.
TOKEN_PRIVATE_KEY, TOKEN_PUBLIC_KEY = generate_keypair()
#: The variables that give it to booking and payment, in-process or in a subprocess.
TOKEN_KEY_ENV = {
    "PAYMENT_TOKEN_PRIVATE_KEY": TOKEN_PRIVATE_KEY,
    "BOOKING_PAYMENT_TOKEN_PUBLIC_KEY": TOKEN_PUBLIC_KEY,
}


async def poll(
    fetch: Callable[[], Awaitable[T]] | Callable[[], T],
    done: Callable[[T], bool],
    timeout: float,
    interval: float = 0.25,
) -> tuple[T, bool]:
    """Fetches until ``done`` holds or ``timeout`` passes; returns the last value and whether it held.

    ``fetch`` may be a coroutine function or a plain one (a predicate on local state).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = fetch()
        if inspect.isawaitable(value):
            value = await value
        if done(value):
            return value, True
        if time.monotonic() > deadline:
            return value, False
        await asyncio.sleep(interval)


async def eventually(
    check: Callable[[], Awaitable[T]] | Callable[[], T],
    *,
    timeout: float = 10.0,
    interval: float = 0.02,
    message: str = "the condition",
) -> T:
    """Polls ``check`` (plain or async) until it returns a truthy value, and returns that value.

    Fails the test after ``timeout``, naming ``message`` and the last value.
    """
    value, held = await poll(check, bool, timeout, interval)
    if not held:
        raise AssertionError(f"timed out after {timeout}s waiting for {message}; last value: {value!r}")
    return value


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


async def publish(js: JetStreamContext, env: Envelope, *, msg_id: str | None = None) -> int:
    """Publishes an envelope directly to JetStream; returns its stream sequence.

    ``msg_id`` replaces the ``Nats-Msg-Id`` (the event id): a copy past JetStream's de-duplication.
    """
    headers = env.headers()
    if msg_id is not None:
        headers["Nats-Msg-Id"] = msg_id
    ack = await js.publish(env.subject, env.data, headers=headers)
    return int(ack.seq)


def prepared_schema(tmp_path_factory: pytest.TempPathFactory, migrations: Migrations, service: str) -> Path:
    """A SQLite file holding ``service``'s schema, for ``choreo.testing.handler_harness(schema=...)``.

    Made once per module (the fixture's scope): running the revisions for every test would
    cost more than the tests themselves.
    """
    path = tmp_path_factory.mktemp("schema") / f"{service}.db"
    return asyncio.run(prepare_database(path, migrations, service=service))


async def row_count(engine: AsyncEngine, table: Table) -> int:
    """How many rows ``table`` holds."""
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())
