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


async def configured(system: System, load: Load, injected: Injected) -> None:
    """The slow provider is the fault: it is configured, nothing else is done."""
    injected.count += 1


@pytest.mark.parametrize(
    ("db", "payment_replicas"),
    # On PostgreSQL two payment replicas share the provider's ledger: a redelivery
    # of a booking still in the provider lands on either.
    [("sqlite", 1), ("postgres", 2)],
)
async def test_provider_slower_than_ack_wait(db: str, payment_replicas: int, tmp_path: Path) -> None:
    replicas = {"payment": payment_replicas}
    async with running_system(tmp_path, db, env=SLOW, replicas=replicas) as system:
        await run_scenario(system, "slow-provider", configured)
