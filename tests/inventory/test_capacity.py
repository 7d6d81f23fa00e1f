"""The operator's capacity commands: in-process on both databases, and ``python -m inventory capacity``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from choreo.db import make_engine
from choreo.envelope import H_SOURCE
from choreo.inventory.v1 import events_pb2 as inventory_events
from choreo.outbox import outbox_table
from choreo.testing import HandlerHarness
from inventory.capacity import set_capacity
from tests.inventory.facts import created, resource_rows

REPO = Path(__file__).resolve().parents[2]


async def outbox_facts(h: HandlerHarness) -> list[tuple[str, dict[str, str], bytes]]:
    async with h.engine.connect() as conn:
        rows = await conn.execute(
            select(outbox_table.c.subject, outbox_table.c.headers, outbox_table.c.payload).order_by(
                outbox_table.c.id
            )
        )
        return [(r.subject, json.loads(r.headers), bytes(r.payload)) for r in rows]


async def test_set_capacity_commits_the_change_and_its_fact_together(h: HandlerHarness) -> None:
    async with h.engine.begin() as conn:
        state, env = await set_capacity(conn, "room-1", 7, source="inventory")
    assert (state.capacity, state.reserved, state.available, state.over_reserved) == (7, 0, 7, False)
    [(subject, headers, payload)] = await outbox_facts(h)
    assert (subject, headers[H_SOURCE]) == ("inventory.capacity_set", "inventory")
    fact = inventory_events.InventoryCapacitySet.FromString(payload)
    assert (fact.resource_id, fact.capacity) == ("room-1", 7)
    assert fact.set_at.seconds > 0
    assert env.subject == subject
    assert await resource_rows(h.engine) == {"room-1": (7, 0)}


async def test_a_rolled_back_change_leaves_no_fact(h: HandlerHarness) -> None:
    with pytest.raises(RuntimeError):
        async with h.engine.begin() as conn:
            await set_capacity(conn, "room-1", 7, source="inventory")
            raise RuntimeError("the operator's transaction failed")
    assert await resource_rows(h.engine) == {}
    assert await outbox_facts(h) == []


async def test_a_new_capacity_keeps_the_reserved_units(h: HandlerHarness) -> None:
    await h.handle(created("b-1", "room-1", 4))
    async with h.engine.begin() as conn:
        state, _ = await set_capacity(conn, "room-1", 3, source="inventory")
    assert (state.capacity, state.reserved, state.available, state.over_reserved) == (3, 4, 0, True)
    assert await resource_rows(h.engine) == {"room-1": (3, 4)}


@pytest.mark.parametrize(
    ("resource_id", "units", "named"),
    [
        ("", 1, "RESOURCE_ID"),
        ("a b", 1, "RESOURCE_ID"),
        ("r" * 65, 1, "RESOURCE_ID"),
        ("r", -1, "CAPACITY"),
        ("r", 1_000_000_001, "CAPACITY"),
    ],
)
async def test_set_capacity_refuses_wrong_values(
    h: HandlerHarness, resource_id: str, units: int, named: str
) -> None:
    with pytest.raises(ValueError, match=named):
        async with h.engine.begin() as conn:
            await set_capacity(conn, resource_id, units, source="inventory")
    assert await resource_rows(h.engine) == {}


def cli(database_url: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("INVENTORY_")}
    environment |= {"PYTHONPATH": str(REPO), "INVENTORY_DATABASE_URL": database_url, **env}
    return subprocess.run(
        [sys.executable, "-m", "inventory", *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_the_command_line_sets_and_shows_capacities(database_url: str) -> None:
    # A database the service never ran on: the command brings its schema first.
    done = cli(database_url, "capacity", "set", "room-1", "10")
    assert done.returncode == 0, done.stderr
    assert "room-1: capacity 10 (reserved 0, available 10)" in done.stdout
    assert cli(database_url, "capacity", "set", "hall.B:2", "0").returncode == 0
    shown = cli(database_url, "capacity", "show")
    assert shown.returncode == 0, shown.stderr
    lines = [line.split() for line in shown.stdout.splitlines()]
    assert lines == [
        ["RESOURCE_ID", "CAPACITY", "RESERVED", "AVAILABLE"],
        ["hall.B:2", "0", "0", "0"],
        ["room-1", "10", "0", "10"],
    ]
    one = cli(database_url, "capacity", "show", "room-1")
    assert [line.split() for line in one.stdout.splitlines()][1:] == [["room-1", "10", "0", "10"]]
    unseen = cli(database_url, "capacity", "show", "suite-7", INVENTORY_DEFAULT_CAPACITY="12")
    assert unseen.returncode == 0
    assert unseen.stdout.splitlines()[1].split() == ["suite-7", "12", "0", "12"]
    assert "not booked yet" in unseen.stdout
    engine = make_engine(database_url)
    try:
        assert await resource_rows(engine) == {"room-1": (10, 0), "hall.B:2": (0, 0)}
        async with engine.connect() as conn:
            subjects = [r[0] for r in await conn.execute(select(outbox_table.c.subject))]
    finally:
        await engine.dispose()
    assert subjects == ["inventory.capacity_set"] * 2


async def test_lowering_a_capacity_below_the_reserved_units_warns(h: HandlerHarness) -> None:
    url = str(h.engine.url)
    await h.handle(created("b-1", "room-1", 4))
    done = cli(url, "capacity", "set", "room-1", "3")
    assert done.returncode == 0, done.stderr
    assert "room-1: capacity 3 (reserved 4, available 0)" in done.stdout
    assert "warning: room-1 has 4 units reserved, more than its new capacity 3" in done.stderr
    assert await resource_rows(h.engine) == {"room-1": (3, 4)}


@pytest.mark.parametrize(
    ("args", "named", "why"),
    [
        (["capacity", "set", "room 1", "5"], "RESOURCE_ID", "1 to 64 characters"),
        (["capacity", "set", "r" * 65, "5"], "RESOURCE_ID", "1 to 64 characters"),
        (["capacity", "set", "room-1", "-1"], "CAPACITY", "from 0 to 1000000000"),
        (["capacity", "set", "room-1", "1000000001"], "CAPACITY", "from 0 to 1000000000"),
        (["capacity", "set", "room-1", "ten"], "CAPACITY", "'ten'"),
        (["capacity", "set", "room-1", "1.5"], "CAPACITY", "'1.5'"),
        (["capacity", "show", "bad/id"], "RESOURCE_ID", "'bad/id'"),
        (["capacity", "set", "room-1"], "CAPACITY", "required"),
    ],
)
def test_wrong_arguments_are_refused_naming_them(
    tmp_path: Path, args: list[str], named: str, why: str
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'inventory.db'}"
    done = cli(url, *args)
    assert done.returncode == 2
    assert f"argument {named}" in done.stderr or f"arguments are required: {named}" in done.stderr
    assert why in done.stderr
    assert not (tmp_path / "inventory.db").exists()  # refused before anything was touched


def test_an_unknown_command_is_refused(tmp_path: Path) -> None:
    done = cli(f"sqlite+aiosqlite:///{tmp_path / 'i.db'}", "capacity", "delete", "room-1")
    assert done.returncode == 2
    assert "invalid choice: 'delete'" in done.stderr


def test_a_wrong_setting_stops_the_command_naming_it(tmp_path: Path) -> None:
    done = cli(
        f"sqlite+aiosqlite:///{tmp_path / 'i.db'}", "capacity", "show", INVENTORY_DEFAULT_CAPACITY="-3"
    )
    assert done.returncode != 0
    assert "INVENTORY_DEFAULT_CAPACITY" in done.stderr


def test_the_help_names_the_arguments(tmp_path: Path) -> None:
    done = cli(f"sqlite+aiosqlite:///{tmp_path / 'i.db'}", "capacity", "set", "--help")
    assert done.returncode == 0
    assert "RESOURCE_ID" in done.stdout and "CAPACITY" in done.stdout
