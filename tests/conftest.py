"""Fixtures: real nats-server processes, real databases (SQLite and PostgreSQL), a real SMTP server.

The chain follows nats.py's own suite: store_dir -> nats_server -> nc -> js.
Each test gets its own server on a free port, so a test may kill and restart it.
PostgreSQL tests use a fresh database per test on CHOREO_TEST_PG_URL
(default: the machine's local server, database ``test``).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import nats
import pytest
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from choreoctl.stack.natsserver import NatsServer
from tests.notification.smtpserver import SmtpServer
from tests.support import TOKEN_KEY_ENV

PG_URL = os.environ.get("CHOREO_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture(autouse=True, scope="session")
def payment_token_keys() -> Iterator[None]:
    """Booking and payment need their sealing keys to start: one pair for the session, in the
    environment, so every in-process service and every subprocess stack finds it."""
    saved = {name: os.environ.get(name) for name in TOKEN_KEY_ENV}
    os.environ.update(TOKEN_KEY_ENV)
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    path = tmp_path / "jetstream"
    path.mkdir()
    return path


@pytest.fixture
def nats_server(store_dir: Path) -> Iterator[NatsServer]:
    server = NatsServer(store_dir)
    server.start()
    yield server
    server.kill()


@pytest.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[NATS]:
    client = await nats.connect(
        nats_server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2, connect_timeout=2
    )
    yield client
    await client.close()


@pytest.fixture
def js(nc: NATS) -> JetStreamContext:
    return nc.jetstream()


async def _pg_admin() -> asyncpg.Connection:
    try:
        return await asyncpg.connect(PG_URL, timeout=3)
    except (OSError, asyncpg.PostgresError) as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"PostgreSQL not reachable at {PG_URL}: {exc}")


async def make_database_url(kind: str, tmp_path: Path) -> AsyncIterator[str]:
    if kind == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / f'db-{uuid.uuid4().hex[:8]}.db'}"
        return
    admin = await _pg_admin()
    name = f"choreo_test_{uuid.uuid4().hex[:12]}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    base = PG_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    try:
        yield f"{base}/{name}"
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture(params=["sqlite", "postgres"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh, empty database: once on SQLite, once on PostgreSQL."""
    async for url in make_database_url(request.param, tmp_path):
        yield url


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    """A real SMTP server (aiosmtpd) on 127.0.0.1 that records what it accepts."""
    server = SmtpServer()
    server.start()
    yield server
    server.stop()
