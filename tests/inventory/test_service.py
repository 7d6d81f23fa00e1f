"""The inventory service in-process against a real nats-server, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
from nats.js import JetStreamContext

from choreo.bus import ensure_stream
from choreo.consumer import EventConsumer
from choreo.envelope import Envelope
from choreo.inventory.v1 import events_pb2 as inventory_events
from choreoctl.stack.natsserver import NatsServer
from inventory.build import build
from inventory.settings import InventorySettings
from tests.analytics.facts import wait_caught_up
from tests.conftest import make_database_url
from tests.inventory.facts import cancelled, created, reservation_rows, resource_rows
from tests.streams import BOOKING
from tests.support import eventually, publish, running, stream_count, stream_envelopes

REPO = Path(__file__).resolve().parents[2]
INVENTORY = "INVENTORY"


@pytest.fixture(autouse=True)
async def booking_stream(js: JetStreamContext) -> None:
    """The stream the booking service would own: inventory only reads it."""
    await ensure_stream(js, BOOKING)


def settings(nats_server: NatsServer, database_url: str, **extra: object) -> InventorySettings:
    values: dict[str, object] = {
        "nats_url": nats_server.url,
        "database_url": database_url,
        "health_port": 0,
        "max_deliveries": 3,
        "retry_backoff_seconds": 0.05,
        "retry_backoff_max_seconds": 0.5,
        "log_format": "text",
        "default_capacity": 2,
    }
    return InventorySettings(**(values | extra))  # type: ignore[arg-type]


async def at_least(js: JetStreamContext, stream: str, n: int) -> bool:
    return await stream_count(js, stream) >= n


async def inventory_facts(js: JetStreamContext) -> list[tuple[str, object]]:
    """INVENTORY's facts in order: (subject, decoded fact)."""
    types = {
        "inventory.reserved": inventory_events.InventoryReserved,
        "inventory.reservation_failed": inventory_events.InventoryReservationFailed,
        "inventory.released": inventory_events.InventoryReleased,
        "inventory.capacity_set": inventory_events.InventoryCapacitySet,
    }
    if not await stream_count(js, INVENTORY):
        return []
    return [(env.subject, env.decode(types[env.subject])) for env in await stream_envelopes(js, INVENTORY)]


async def publish_all(js: JetStreamContext, facts: list[Envelope]) -> None:
    for env in facts:
        await publish(js, env)


async def test_reserves_refuses_and_releases_over_nats(
    nats_server: NatsServer, database_url: str, js: JetStreamContext
) -> None:
    async with running(build(settings(nats_server, database_url))) as svc:
        await publish_all(
            js,
            [
                created("b-1", "room-1"),
                created("b-2", "room-1"),
                created("b-3", "room-1"),  # the default capacity is 2: sold out
                created("b-4", ""),  # no resource: nothing to do
                cancelled("b-1", "room-1", "cancelled_by_user"),
                cancelled("b-9", "room-1", "payment_timeout"),  # before its creation: a tombstone
                created("b-9", "room-1"),  # reserves nothing
                created("b-5", "room-1"),  # b-1's unit is free again
            ],
        )
        await wait_caught_up(js, "inventory")
        await eventually(partial(at_least, js, INVENTORY, 5), message="inventory's facts")
        assert svc.engine is not None
        assert await resource_rows(svc.engine) == {"room-1": (2, 2)}
        states = {b: row[1] for b, row in (await reservation_rows(svc.engine)).items()}
    assert states == {
        "b-1": "RELEASED",
        "b-2": "RESERVED",
        "b-3": "REFUSED",
        "b-9": "CANCELLED",
        "b-5": "RESERVED",
    }
    facts = await inventory_facts(js)
    assert [(s, f.booking_id) for s, f in facts] == [  # type: ignore[attr-defined]
        ("inventory.reserved", "b-1"),
        ("inventory.reserved", "b-2"),
        ("inventory.reservation_failed", "b-3"),
        ("inventory.released", "b-1"),
        ("inventory.reserved", "b-5"),
    ]
    failed = facts[2][1]
    assert (failed.reason, failed.available) == ("sold_out", 0)  # type: ignore[attr-defined]
    released = facts[3][1]
    assert (released.quantity, released.reason) == (1, "cancelled_by_user")  # type: ignore[attr-defined]
    envelopes = await stream_envelopes(js, INVENTORY)
    assert {e.source for e in envelopes} == {"inventory"}
    assert [e.correlation_id for e in envelopes] == ["wf-b-1", "wf-b-2", "wf-b-3", "wf-b-1", "wf-b-5"]
    assert await stream_count(js, "DLQ") == 0


async def test_a_forged_booking_fact_is_dead_lettered(
    nats_server: NatsServer, database_url: str, js: JetStreamContext
) -> None:
    async with running(build(settings(nats_server, database_url))) as svc:
        await publish_all(js, [created("b-1", "room-1", source="mallory"), created("b-2", "room-1")])
        await wait_caught_up(js, "inventory")
        await eventually(partial(at_least, js, "DLQ", 1), message="the forged fact in the DLQ")
        await eventually(partial(at_least, js, INVENTORY, 1), message="b-2's reservation")
        assert svc.engine is not None
        assert await resource_rows(svc.engine) == {"room-1": (2, 1)}
    dead = await js.get_msg("DLQ", 1)
    assert dead.headers is not None and "ce-source 'mallory'" in dead.headers["choreo-dlq-error"]
    assert [f.booking_id for _, f in await inventory_facts(js)] == ["b-2"]  # type: ignore[attr-defined]


async def test_the_capacity_command_is_published_by_the_running_service(
    nats_server: NatsServer, database_url: str, js: JetStreamContext
) -> None:
    async with running(build(settings(nats_server, database_url))):
        env = {k: v for k, v in os.environ.items() if not k.startswith("INVENTORY_")}
        env |= {"PYTHONPATH": str(REPO), "INVENTORY_DATABASE_URL": database_url}
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "inventory", "capacity", "set", "room-1", "3"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        await eventually(partial(at_least, js, INVENTORY, 1), message="InventoryCapacitySet")
        await publish_all(js, [created(f"b-{i}", "room-1") for i in range(4)])
        await wait_caught_up(js, "inventory")
        await eventually(partial(at_least, js, INVENTORY, 5), message="the reservations")
    facts = await inventory_facts(js)
    first = facts[0][1]
    assert (facts[0][0], first.resource_id, first.capacity) == ("inventory.capacity_set", "room-1", 3)  # type: ignore[attr-defined]
    assert [s for s, _ in facts[1:]] == ["inventory.reserved"] * 3 + ["inventory.reservation_failed"]


async def test_two_replicas_on_one_database_never_over_reserve(
    nats_server: NatsServer, js: JetStreamContext, tmp_path: Path
) -> None:
    n = 20
    async for url in make_database_url("postgres", tmp_path):
        replica = partial(settings, nats_server, url, default_capacity=n, batch_size=3)
        async with running(build(replica())) as one, running(build(replica())) as two:
            await publish_all(js, [created(f"b-{i}", "room-1") for i in range(n + 1)])
            await wait_caught_up(js, "inventory", timeout=30)
            await eventually(partial(at_least, js, INVENTORY, n + 1), message="every booking's answer")
            assert one.engine is not None and two.engine is not None
            assert await resource_rows(one.engine) == {"room-1": (n, n)}
            reserved = [r for r in (await reservation_rows(two.engine)).values() if r[1] == "RESERVED"]
            assert len(reserved) == n
            # Both replicas took part (the batch size splits the work between them).
            shares = [
                c.processed for svc in (one, two) for c in svc.components if isinstance(c, EventConsumer)
            ]
            assert sum(shares) == n + 1 and min(shares) > 0, shares
    subjects = [s for s, _ in await inventory_facts(js)]
    assert (subjects.count("inventory.reserved"), subjects.count("inventory.reservation_failed")) == (n, 1)
    assert await stream_count(js, "DLQ") == 0
