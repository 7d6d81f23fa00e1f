"""Running a service: start its parts, wait for a signal, shut down gracefully.

Each service's ``build(settings)`` assembles a ``Service`` from runtime parts;
its ``__main__`` calls ``run_main``. Shutdown order matters: first stop taking
work (command subscriptions, consumers finish their batch), then publish what
the outbox still holds, then drain the NATS connection, then close the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from nats.aio.client import Client as NATS
from pydantic import ValidationError
from pydantic_settings import SettingsError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from choreo import dbready
from choreo.db import read_only
from choreo.health import HealthServer
from choreo.logs import configure_logging
from choreo.outbox import OutboxRelay
from choreo.schema import SchemaRefused
from choreo.settings import ServiceSettings, UnknownVariablesError

log = logging.getLogger(__name__)


class Component(Protocol):
    """A long-running part of a service (consumer, command server, ...)."""

    async def run(self) -> None: ...

    def stop(self) -> None: ...


@dataclass
class Service:
    """A service's running parts, owned together so they stop together.

    Attributes:
        name: Service name (logs, NATS connection name).
        settings: The settings it was built from.
        nc: NATS connection (drained on stop).
        engine: Its database (disposed on stop), if it has one.
        components: Parts that take work; stopped first.
        relay: The outbox relay; stopped after the components, so facts they
            committed are still published.
        health: Probe endpoint, if configured.
    """

    name: str
    settings: ServiceSettings
    nc: NATS
    engine: AsyncEngine | None = None
    components: list[Component] = field(default_factory=list)
    relay: OutboxRelay | None = None
    health: HealthServer | None = None
    on_stop: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _relay_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Starts every part in the background."""
        if self.relay is not None:
            self._relay_task = asyncio.create_task(self.relay.run(), name=f"{self.name}-outbox")
        self._tasks = [asyncio.create_task(c.run(), name=type(c).__name__) for c in self.components]
        for component in self.components:
            # Parts that take requests (command servers) say when they are subscribed;
            # start() returns only then, so the service is never "up" but deaf.
            ready = getattr(component, "ready", None)
            if isinstance(ready, asyncio.Event):
                await asyncio.wait_for(ready.wait(), 30)
        if self.health is not None:
            await self.health.start()

    async def wait(self, stop: asyncio.Event) -> None:
        """Returns when ``stop`` is set or a part crashes (which is then re-raised)."""
        stopper = asyncio.create_task(stop.wait())
        watched: set[asyncio.Task[None] | asyncio.Task[bool]] = {stopper, *self._tasks}
        if self._relay_task is not None:
            watched.add(self._relay_task)
        done, _ = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        for task in done:
            if task is stopper:
                continue
            if task.cancelled():
                raise RuntimeError(f"{task.get_name()} was cancelled")
            if task.exception() is not None:
                raise task.exception()  # type: ignore[misc]

    async def stop(self, grace: float | None = None) -> None:
        """Graceful shutdown within ``grace`` seconds."""
        grace = self.settings.shutdown_grace_seconds if grace is None else grace
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        for component in self.components:
            component.stop()
        await _finish(self._tasks, deadline - loop.time())
        if self.relay is not None and self._relay_task is not None:
            self.relay.stop()
            await _finish([self._relay_task], max(1.0, deadline - loop.time()))
        for hook in self.on_stop:
            await hook()
        if self.health is not None:
            await self.health.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.nc.drain(), max(1.0, deadline - loop.time()))
        if not self.nc.is_closed:
            # The drain failed (NATS down): close anyway, or the client keeps reconnecting.
            with contextlib.suppress(Exception):
                await self.nc.close()
        if self.engine is not None:
            await self.engine.dispose()
        log.info("%s stopped", self.name)


async def _finish(tasks: list[asyncio.Task[None]], timeout: float) -> None:
    pending = [t for t in tasks if not t.done()]
    if pending:
        _, still = await asyncio.wait(pending, timeout=max(0.1, timeout))
        for task in still:
            task.cancel()
        await asyncio.gather(*still, return_exceptions=True)


def nats_check(nc: NATS) -> Callable[[], Awaitable[str | None]]:
    async def check() -> str | None:
        return None if nc.is_connected else "not connected to NATS"

    return check


def database_check(engine: AsyncEngine) -> Callable[[], Awaitable[str | None]]:
    async def check() -> str | None:
        # Read-only: a probe must never queue behind a long write transaction.
        async with read_only(engine) as conn:
            await conn.execute(text("SELECT 1"))
        return None

    return check


S = TypeVar("S", bound=ServiceSettings)


def load_settings(settings_cls: type[S]) -> S:
    """Reads the settings once; exits with a readable message when one is wrong."""
    try:
        return settings_cls()
    except UnknownVariablesError as exc:  # a typo, or a setting this service does not have
        sys.exit("\n  ".join([f"invalid configuration for {settings_cls.__name__}:", *exc.problems]))
    except SettingsError as exc:  # e.g. CHOREO_SECRETS_DIR names no directory
        sys.exit(f"invalid configuration for {settings_cls.__name__}: {exc}")
    except ValidationError as exc:
        prefix = str(settings_cls.model_config.get("env_prefix", ""))
        lines = [f"invalid configuration for {settings_cls.__name__}:"]
        for err in exc.errors():
            name = prefix + "_".join(str(p) for p in err["loc"]).upper()
            lines.append(f"  {name}: {err['msg']}")
        sys.exit("\n".join(lines))


#: Exit status of a service whose configuration a restart cannot fix (a database that
#: does not exist or refuses it); ``choreoctl.stack.supervisor`` does not restart it.
EXIT_CONFIG = os.EX_CONFIG


async def start_up(settings: S, build: Callable[[S], Awaitable[Service]]) -> Service:
    """Waits for the service's databases (``choreo.dbready``), then builds it.

    Raises:
        dbready.DatabaseUnusable: A database does not exist or refuses the service.
    """
    await dbready.wait_for_all(settings)
    return await build(settings)


def run_main(settings_cls: type[S], build: Callable[[S], Awaitable[Service]]) -> None:
    """Entry point of a service process: settings, logging, event loop, signals.

    A database that does not exist or refuses the service ends it with one log
    line and ``EXIT_CONFIG``, not a traceback; one that is unreachable is waited for.
    """
    settings = load_settings(settings_cls)
    configure_logging(settings.service_name, settings.log_level, settings.log_format)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        # Building connects to NATS and the database, which may retry for a long
        # time; a SIGTERM meanwhile must still stop the process promptly.
        building = asyncio.ensure_future(start_up(settings, build))
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({building, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not building.done():
            building.cancel()
            await asyncio.gather(building, return_exceptions=True)
            log.info("stopped before start-up completed")
            return
        stopping.cancel()
        service = building.result()
        await service.start()
        log.info("%s started", service.name)
        try:
            await service.wait(stop)
        finally:
            await service.stop()

    try:
        try:
            import uvloop
        except ImportError:
            asyncio.run(main())
        else:
            uvloop.run(main())
    except dbready.DatabaseUnusable as exc:
        log.error("%s", exc)
        sys.exit(EXIT_CONFIG)
    except SchemaRefused as exc:
        sys.exit(str(exc))
    except SettingsError as exc:  # a setting the service cannot start without (e.g. a key)
        sys.exit(f"invalid configuration: {exc}")
