"""Poison among good facts: a garbage body and an unknown type on booking.created, mid-load."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.inject import Injected, publish_poison
from tests.faults.load import Load
from tests.faults.scenario import run_scenario
from tests.faults.system import System, running_system

pytestmark = [pytest.mark.faults, pytest.mark.e2e]


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
async def test_poison_among_good_facts(db: str, tmp_path: Path) -> None:
    async def chaos(system: System, load: Load, injected: Injected) -> None:
        await load.reached(load.total // 3)
        await publish_poison(system, injected)

    async with running_system(tmp_path, db) as system:
        await run_scenario(system, "poison", chaos)
