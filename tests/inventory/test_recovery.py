"""Inventory rebuilt by replay of INVENTORY after losing its database: the same units reserved, the
same reservations, and the booking facts delivered again are duplicates (nothing reserved twice)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial
from pathlib import Path

import pytest
from nats.js import JetStreamContext

from choreo.bus import ensure_stream
from choreo.db import make_engine
from choreoctl.stack.natsserver import NatsServer
from inventory import recovery as recovery_module
from inventory.build import build
from inventory.capacity import set_capacity
from tests.analytics.facts import wait_caught_up
from tests.conftest import make_database_url
from tests.inventory.facts import cancelled, created, reservation_rows, resource_rows
from tests.inventory.test_service import at_least, publish_all, settings
from tests.streams import BOOKING
from tests.support import eventually, running, stream_count

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_a_lost_database_is_rebuilt_and_nothing_is_reserved_twice(
    nats_server: NatsServer, js: JetStreamContext, tmp_path: Path, kind: str
) -> None:
    await ensure_stream(js, BOOKING)
    for name in "ab":
        (tmp_path / name).mkdir()
    async with AsyncExitStack() as stack:
        first_url = await stack.enter_async_context(_database(kind, tmp_path / "a"))
        second_url = await stack.enter_async_context(_database(kind, tmp_path / "b"))
        async with running(build(settings(nats_server, first_url))) as svc:
            assert svc.engine is not None and svc.relay is not None
            async with svc.engine.begin() as conn:
                await set_capacity(conn, "hall", 5, source="inventory")
            svc.relay.notify()
            await eventually(partial(at_least, js, "INVENTORY", 1), message="InventoryCapacitySet")
            await publish_all(
                js,
                [
                    created("b-1", "hall", 2),
                    created("b-2", "hall", 2),
                    created("b-3", "hall", 2),  # 1 unit free: refused
                    created("b-4", "room-1", 1),  # the default capacity (2)
                    cancelled("b-1", "hall", "cancelled_by_user"),
                    created("b-5", "", 0),
                ],
            )
            await wait_caught_up(js, "inventory")
            await eventually(partial(at_least, js, "INVENTORY", 6), message="inventory's facts")
            before = (await resource_rows(svc.engine), await reservation_rows(svc.engine))
        assert before[0] == {"hall": (5, 2), "room-1": (2, 1)}
        # The database is lost, and the durable consumer with it: BOOKING comes again from its start.
        await js.delete_consumer("BOOKING", "inventory")
        async with running(build(settings(nats_server, second_url))) as svc:
            assert svc.engine is not None
            assert (await resource_rows(svc.engine), await reservation_rows(svc.engine)) == before
            await wait_caught_up(js, "inventory")
            assert await stream_count(js, "INVENTORY") == 6  # every redelivered fact was a duplicate
            assert (await resource_rows(svc.engine), await reservation_rows(svc.engine)) == before
            # And it goes on from there: b-1's units are free.
            await publish_all(js, [created("b-6", "hall", 3)])
            await eventually(partial(at_least, js, "INVENTORY", 7), message="b-6's reservation")
            assert (await resource_rows(svc.engine))["hall"] == (5, 5)
    assert await stream_count(js, "DLQ") == 0


@asynccontextmanager
async def _database(kind: str, folder: Path) -> AsyncIterator[str]:
    """A fresh, empty database of ``kind`` (a file in the existing ``folder``), dropped afterwards."""
    async for url in make_database_url(kind, folder):
        yield url


def test_choreo_recover_reads_the_default_capacity_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("INVENTORY_DEFAULT_CAPACITY", "7")
    recovery = recovery_module.RECOVERY
    assert recovery.stream == "INVENTORY"
    assert recovery.restores[0].apply.__self__.default_capacity == 7
    with pytest.raises(AttributeError):
        _ = recovery_module.NOTHING


async def test_choreo_recover_inventory_rebuilds_a_stopped_service(
    nats_server: NatsServer, js: JetStreamContext, tmp_path: Path
) -> None:
    await ensure_stream(js, BOOKING)
    first_url, second_url = (f"sqlite+aiosqlite:///{tmp_path / name}" for name in ("a.db", "b.db"))
    async with running(build(settings(nats_server, first_url, default_capacity=3))) as svc:
        await publish_all(
            js, [created("b-1", "room-1", 2), created("b-2", "room-1", 2), cancelled("b-1", "room-1")]
        )
        await wait_caught_up(js, "inventory")
        await eventually(partial(at_least, js, "INVENTORY", 3), message="inventory's facts")
        assert svc.engine is not None
        before = (await resource_rows(svc.engine), await reservation_rows(svc.engine))
    assert before[0] == {"room-1": (3, 0)}
    env = {k: v for k, v in os.environ.items() if not k.startswith("INVENTORY_")}
    env |= {
        "PYTHONPATH": str(REPO),
        "INVENTORY_NATS_URL": nats_server.url,
        "INVENTORY_DATABASE_URL": second_url,
        "INVENTORY_DEFAULT_CAPACITY": "3",
    }
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "choreoctl", "recover", "inventory"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "rebuilt inventory from 3 facts of INVENTORY" in done.stdout
    engine = make_engine(second_url)
    try:
        assert (await resource_rows(engine), await reservation_rows(engine)) == before
    finally:
        await engine.dispose()
