"""A payment provider slower than the ack wait: still one charge per booking, and no false dead letter."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.inject import Injected
from tests.faults.load import Load
from tests.faults.scenario import run_scenario
from tests.faults.system import System, running_system

pytestmark = [pytest.mark.faults, pytest.mark.e2e]

ACK_WAIT_SECONDS = 1
PROVIDER_LATENCY_MS = 2500
SLOW = {
    "PAYMENT_ACK_WAIT_SECONDS": str(ACK_WAIT_SECONDS),
    "PAYMENT_PROVIDER_LATENCY_MS": str(PROVIDER_LATENCY_MS),
}


async def no_more_faults(system: System, load: Load, injected: Injected) -> None:
    """The slow provider is the fault: it is configured, nothing else is done."""
    injected.count += 1


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
async def test_provider_slower_than_ack_wait(db: str, tmp_path: Path) -> None:
    async with running_system(tmp_path, db, env=SLOW) as system:
        await run_scenario(system, "slow-provider", no_more_faults)


async def test_provider_slower_than_ack_wait_with_two_payment_replicas(tmp_path: Path) -> None:
    """Two payment replicas on one PostgreSQL ledger: a redelivery lands on the other replica."""
    async with running_system(tmp_path, "postgres", env=SLOW, replicas={"payment": 2}) as system:
        await run_scenario(system, "slow-provider-replicas", no_more_faults)
