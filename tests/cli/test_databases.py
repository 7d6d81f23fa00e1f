"""A database that is missing, refuses, or is not up yet: one line and what to do, no crash loop.

The services run as processes (``python -m booking``) against the local
PostgreSQL, as ``choreo up`` runs them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from choreo import dbready
from choreoctl.stack.natsserver import NatsServer
from choreoctl.stack.ports import free_port
from tests.cli.upprocess import ANY_PORT, Up
from tests.conftest import PG_URL, _pg_admin

ROOT = Path(__file__).resolve().parents[2]
SERVER = PG_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def admin() -> AsyncIterator[asyncpg.Connection]:
    conn = await _pg_admin()
    yield conn
    await conn.close()


@pytest.fixture
async def new_database_name(admin: asyncpg.Connection) -> AsyncIterator[str]:
    """A database name that does not exist yet; dropped afterwards if something created it."""
    name = unique("choreo_db")
    yield name
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Booking:
    """``python -m booking`` with its output collected."""

    def __init__(self, nats_url: str, database_url: str, health_port: int = 0) -> None:
        env = {
            **os.environ,
            "BOOKING_NATS_URL": nats_url,
            "BOOKING_DATABASE_URL": database_url,
            "BOOKING_HEALTH_PORT": str(health_port),
            "BOOKING_HEALTH_HOST": "127.0.0.1",
            "BOOKING_LOG_FORMAT": "text",
            "PYTHONPATH": str(ROOT),
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "booking"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def finish(self, timeout: float) -> tuple[int, list[str]]:
        try:
            out, _ = self.process.communicate(timeout=timeout)
        finally:
            self.stop()
        return self.process.returncode, [line for line in out.splitlines() if line.strip()]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def booking_processes() -> Iterator[list[Booking]]:
    started: list[Booking] = []
    yield started
    for booking in started:
        booking.stop()


def test_a_missing_database_says_how_to_create_it_once_and_exits(
    nats_server: NatsServer, booking_processes: list[Booking]
) -> None:
    # The README's own example, on a database name that does not exist.
    name = unique("missing")
    booking = Booking(nats_server.url, f"{SERVER}/{name}")
    booking_processes.append(booking)
    code, lines = booking.finish(timeout=60)
    assert code == os.EX_CONFIG, lines
    assert not any("Traceback" in line for line in lines), "\n".join(lines)
    errors = [line for line in lines if "BOOKING_DATABASE_URL" in line]
    assert len(errors) == 1, lines
    assert f"database {name!r} on 127.0.0.1:5432 does not exist" in errors[0]
    assert f"create it with: createdb -h 127.0.0.1 -p 5432 -U postgres {name}" in errors[0]


def test_a_refused_user_is_named_once_and_the_service_exits(
    nats_server: NatsServer, booking_processes: list[Booking]
) -> None:
    role = unique("nobody")
    booking = Booking(nats_server.url, f"postgresql+asyncpg://{role}:secret-pw@127.0.0.1:5432/test")
    booking_processes.append(booking)
    code, lines = booking.finish(timeout=60)
    assert code == os.EX_CONFIG, lines
    assert not any("Traceback" in line for line in lines), "\n".join(lines)
    errors = [line for line in lines if "BOOKING_DATABASE_URL" in line]
    assert len(errors) == 1, lines
    assert f"refused user {role!r}" in errors[0]
    assert "secret-pw" not in "\n".join(lines), "the password is never logged"


async def forward(listen_port: int, target: tuple[str, int]) -> asyncio.Server:
    """A TCP proxy to ``target``: the database "comes up" on ``listen_port`` when this starts."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection(*target)
        await asyncio.gather(pipe(client_r, server_w), pipe(server_r, client_w))

    return await asyncio.start_server(handle, "127.0.0.1", listen_port)


async def test_an_unreachable_database_is_waited_for_without_a_crash_loop(
    nats_server: NatsServer, admin: asyncpg.Connection, new_database_name: str, tmp_path: Path
) -> None:
    await admin.execute(f'CREATE DATABASE "{new_database_name}"')
    db_port, health_port = free_port(), free_port()
    log = tmp_path / "booking.log"
    env = {
        **os.environ,
        "BOOKING_NATS_URL": nats_server.url,
        "BOOKING_DATABASE_URL": f"postgresql+asyncpg://postgres@127.0.0.1:{db_port}/{new_database_name}",
        "BOOKING_HEALTH_PORT": str(health_port),
        "BOOKING_HEALTH_HOST": "127.0.0.1",
        "BOOKING_LOG_FORMAT": "text",
        "PYTHONPATH": str(ROOT),
    }
    with log.open("w") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "booking", cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    proxy: asyncio.Server | None = None
    try:
        await asyncio.sleep(6)  # the database is down: several attempts
        assert process.returncode is None, log.read_text()
        lines = log.read_text().splitlines()
        unreachable = [line for line in lines if "is unreachable" in line]
        assert len(unreachable) == 1, lines
        assert "BOOKING_DATABASE_URL" in unreachable[0] and "retrying with backoff" in unreachable[0]
        assert not any("Traceback" in line for line in lines), lines

        proxy = await forward(db_port, ("127.0.0.1", 5432))  # the database comes up
        deadline = time.monotonic() + 60
        async with httpx.AsyncClient() as client:
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"http://127.0.0.1:{health_port}/readyz")).status_code == 200:
                        break
                assert process.returncode is None and time.monotonic() < deadline, log.read_text()
                await asyncio.sleep(0.2)
        assert "database reachable after" in log.read_text()
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), 30)
        if proxy is not None:
            proxy.close()
    assert process.returncode == 0, log.read_text()


async def test_create_missing_creates_the_database(admin: asyncpg.Connection, new_database_name: str) -> None:
    url = f"{SERVER}/{new_database_name}"
    said = await dbready.create_missing("BOOKING_DATABASE_URL", url)
    assert said == f"BOOKING_DATABASE_URL: created database {new_database_name!r} on 127.0.0.1:5432"
    await dbready.check(url)
    assert await dbready.create_missing("BOOKING_DATABASE_URL", url) is None, "it exists now"


async def test_create_missing_says_which_createdb_to_run_when_the_user_may_not(
    admin: asyncpg.Connection, new_database_name: str
) -> None:
    role = unique("nocreate")
    await admin.execute(f'CREATE ROLE "{role}" LOGIN NOCREATEDB')
    try:
        url = f"postgresql+asyncpg://{role}@127.0.0.1:5432/{new_database_name}"
        with pytest.raises(dbready.DatabaseUnusable) as raised:
            await dbready.create_missing("PAYMENT_DATABASE_URL", url)
        message = str(raised.value)
        assert message.startswith(f"PAYMENT_DATABASE_URL: database {new_database_name!r} on 127.0.0.1:5432")
        assert "permission denied to create database" in message
        assert message.endswith(
            f"create it with: createdb -h 127.0.0.1 -p 5432 -U {role} {new_database_name}"
        )
    finally:
        await admin.execute(f'DROP ROLE IF EXISTS "{role}"')


@pytest.mark.e2e
@pytest.mark.slow
def test_choreo_up_creates_the_databases_exported_urls_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = {service: unique(f"up_{service}") for service in ("booking", "payment")}
    for service, name in names.items():
        monkeypatch.setenv(f"{service.upper()}_DATABASE_URL", f"{SERVER}/{name}")
    up = Up("--data-dir", str(tmp_path / "var"), *ANY_PORT)
    try:
        for name in names.values():
            up.wait_for(rf"created database '{name}' on 127\.0\.0\.1:5432")
        up.wait_for(r"^choreo is up:", timeout=90)
        assert up.interrupt() == 0, up.output
    finally:
        if up.process.poll() is None:
            up.interrupt()  # a graceful stop also stops its nats-server
        up.kill()
        asyncio.run(_drop(list(names.values())))


async def _drop(names: list[str]) -> None:
    admin = await asyncpg.connect(PG_URL, timeout=5)
    try:
        for name in names:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()
