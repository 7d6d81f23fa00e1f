"""Fixtures of the runtime suite: a test service's runtime on a fresh NATS and database."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from choreo.runtime import Runtime
from choreoctl.stack.natsserver import NatsServer
from tests.runtime.harness import Probe, close_runtime, open_test_runtime, reader_engine, settings_for

MakeRuntime = Callable[..., Awaitable[Runtime]]


@pytest.fixture
async def make_runtime(nats_server: NatsServer, database_url: str) -> AsyncIterator[MakeRuntime]:
    """Opens runtimes of the test service (settings overridable); closes them afterwards."""
    opened: list[Runtime] = []

    async def make(*, poll_interval: float = 0.2, **overrides: Any) -> Runtime:
        rt = await open_test_runtime(
            settings_for(nats_server.url, database_url, **overrides), poll_interval=poll_interval
        )
        opened.append(rt)
        return rt

    yield make
    for rt in opened:
        await close_runtime(rt)


@pytest.fixture
async def rt(make_runtime: MakeRuntime) -> Runtime:
    """The test service's runtime with the suite's default settings."""
    return await make_runtime()


@pytest.fixture
async def reader(database_url: str, rt: Runtime) -> AsyncIterator[AsyncEngine]:
    """An independent engine on the service's database, for assertions."""
    engine = reader_engine(database_url)
    yield engine
    await engine.dispose()


@pytest.fixture
def probe() -> Probe:
    return Probe()
