"""nats-server frozen (SIGSTOP, then SIGCONT), then killed (SIGKILL, restarted on its port and store)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.inject import Injected, freeze_nats, kill_nats
from tests.faults.load import Load
from tests.faults.scenario import run_scenario
from tests.faults.system import System, running_system

pytestmark = [pytest.mark.faults, pytest.mark.e2e]

#: Shorter than the gateway's command timeout (5 s): clients wait rather than retry.
FROZEN_SECONDS = 3.0
DOWN_SECONDS = 1.0


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
async def test_nats_frozen_then_killed_mid_load(db: str, tmp_path: Path) -> None:
    """Frozen at 1/3 of the load, killed at 2/3; no create is answered while it is frozen or down."""

    async def chaos(system: System, load: Load, injected: Injected) -> None:
        await load.reached(load.total // 3)
        await freeze_nats(system, injected, FROZEN_SECONDS)
        assert load.answered < load.total, "the load was over before nats-server thawed"
        await load.reached(load.total * 2 // 3)
        assert load.answered < load.total, "the load was over before nats-server was killed"
        await kill_nats(system, injected, DOWN_SECONDS)

    async with running_system(tmp_path, db) as system:
        await run_scenario(system, "nats-frozen-killed", chaos, felt_by_clients=True)
