"""One whole system for one fault scenario: nats-server, databases, services, a test client.

Everything is the scenario's own: a nats-server on a free port with its own
store, fresh databases (SQLite files, or PostgreSQL databases made by
``tests.conftest.make_database_url``) for booking, payment, gateway and the
simulated provider's ledger, and the services as separate processes
(``tests.e2e.stack.Stack``), so any part can be frozen, killed and restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import nats
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from choreoctl.stack.natsserver import NatsServer
from tests.conftest import make_database_url
from tests.e2e.stack import Stack

#: The databases a system uses; ``ledger`` is the simulated provider's.
DATABASES = ("booking", "payment", "gateway", "ledger")


@dataclass
class System:
    """The running system of one scenario.

    Attributes:
        db: ``sqlite`` or ``postgres``.
        nats: The scenario's nats-server (kill, freeze and restart it freely).
        stack: The service processes.
        urls: SQLAlchemy URL of each of ``DATABASES``.
        nc: The test's own connection (reconnects forever), for poison and DLQ reads.
    """

    db: str
    nats: NatsServer
    stack: Stack
    urls: dict[str, str]
    nc: NATS

    @property
    def js(self) -> JetStreamContext:
        return self.nc.jetstream(timeout=5)

    @contextlib.asynccontextmanager
    async def engine(self, database: str) -> AsyncIterator[AsyncEngine]:
        """A short-lived engine on one of ``DATABASES``, for reading what the services wrote."""
        engine = create_async_engine(self.urls[database])
        try:
            yield engine
        finally:
            await engine.dispose()

    async def restart(self, *names: str, timeout: float = 30.0) -> None:
        """Starts killed processes again and waits until they are ready, off the event loop."""
        await asyncio.to_thread(self.stack.start, *names, timeout=timeout)


@contextlib.asynccontextmanager
async def running_system(
    root: Path,
    db: str,
    *,
    replicas: dict[str, int] | None = None,
    env: dict[str, str] | None = None,
) -> AsyncIterator[System]:
    """Starts a whole system and stops it (and drops its databases) afterwards."""
    async with contextlib.AsyncExitStack() as stack:
        store = root / "jetstream"
        store.mkdir(parents=True, exist_ok=True)
        server = NatsServer(store)
        server.start()
        stack.callback(server.kill)
        urls: dict[str, str] = {}
        for name in DATABASES:
            gen = make_database_url(db, root)
            urls[name] = await anext(gen)
            stack.push_async_callback(anext, gen, None)
        services = Stack(
            root,
            server.url,
            database_urls={n: urls[n] for n in ("booking", "payment", "gateway")},
            env=env,
            replicas=replicas,
            ledger_url=urls["ledger"],
        )
        stack.callback(services.stop)
        await asyncio.to_thread(services.start)
        nc = await nats.connect(
            server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2, connect_timeout=2
        )
        stack.push_async_callback(nc.close)
        yield System(db, server, services, urls, nc)
