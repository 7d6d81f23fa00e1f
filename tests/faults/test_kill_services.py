"""SIGKILL of each service mid-load, then a restart."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.inject import Injected, kill_and_restart
from tests.faults.load import Load
from tests.faults.scenario import run_scenario
from tests.faults.system import System, running_system

pytestmark = [pytest.mark.faults, pytest.mark.e2e]


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
@pytest.mark.parametrize("service", ["booking", "payment", "gateway"])
async def test_sigkill_mid_load_then_restart(service: str, db: str, tmp_path: Path) -> None:
    async def chaos(system: System, load: Load, injected: Injected) -> None:
        await load.reached(load.total // 3)
        await kill_and_restart(system, injected, service)

    async with running_system(tmp_path, db) as system:
        # Payment takes no requests: clients never see its outage.
        await run_scenario(system, f"kill-{service}", chaos, felt_by_clients=service != "payment")
