"""SIGKILL of each service in turn mid-load, each restarted."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.inject import Injected, kill_and_restart
from tests.faults.load import Load
from tests.faults.scenario import run_scenario
from tests.faults.system import System, running_system

pytestmark = [pytest.mark.faults, pytest.mark.e2e]


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
async def test_each_service_sigkilled_mid_load_then_restarted(db: str, tmp_path: Path) -> None:
    """gateway at 1/4 of the load, booking at 2/4, payment at 3/4.

    While the gateway or booking is down no create is answered, so the next
    milestone (and the next kill) always falls after the restart, mid-load.
    """

    async def chaos(system: System, load: Load, injected: Injected) -> None:
        for quarter, service in enumerate(("gateway", "booking", "payment"), start=1):
            await load.reached(load.total * quarter // 4)
            assert load.answered < load.total, f"the load was over before {service} was killed"
            await kill_and_restart(system, injected, service)

    async with running_system(tmp_path, db) as system:
        await run_scenario(system, "kill-services", chaos, felt_by_clients=True)
