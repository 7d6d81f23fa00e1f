"""PostgreSQL only: connections killed, an outage, and two replicas of each worker."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.inject import Injected, kill_and_restart, refuse_connections, terminate_backends
from tests.faults.load import Load
from tests.faults.scenario import run_scenario
from tests.faults.system import System, running_system

pytestmark = [pytest.mark.faults, pytest.mark.e2e]

#: Connections are killed every TERMINATE_EVERY seconds for TERMINATE_SECONDS.
TERMINATE_SECONDS = 3.0
TERMINATE_EVERY = 0.3
#: A database failover's length: every database refuses connections this long.
OUTAGE_SECONDS = 5.0


async def test_postgres_connections_killed_mid_load(tmp_path: Path) -> None:
    async def chaos(system: System, load: Load, injected: Injected) -> None:
        await load.reached(load.total // 3)
        await terminate_backends(system, injected, TERMINATE_SECONDS, TERMINATE_EVERY)

    async with running_system(tmp_path, "postgres") as system:
        await run_scenario(system, "pg-connections-killed", chaos)


async def test_postgres_outage_mid_load(tmp_path: Path) -> None:
    """Connections killed and refused for a few seconds, as in a failover: facts wait, none is lost."""

    async def chaos(system: System, load: Load, injected: Injected) -> None:
        await load.reached(load.total // 3)
        await refuse_connections(system, injected, OUTAGE_SECONDS)

    async with running_system(tmp_path, "postgres") as system:
        await run_scenario(system, "pg-outage", chaos)


async def test_two_replicas_of_each_worker_one_of_each_killed(tmp_path: Path) -> None:
    """Replicas share the work; the survivors take over what a killed replica held."""

    async def chaos(system: System, load: Load, injected: Injected) -> None:
        await load.reached(load.total // 3)
        await kill_and_restart(system, injected, "booking-2", "payment-2")

    async with running_system(tmp_path, "postgres", replicas={"booking": 2, "payment": 2}) as system:
        await run_scenario(system, "replicas", chaos)
