"""The simulated PSP: test tokens, idempotency keys, latency."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from payment.provider import ChargeRequest
from payment.simulator import SimulatedProvider, ledger, outcome_for


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ("tok_visa", ""),
        ("tok_chargeDeclined", "card_declined"),
        ("tok_chargeDeclinedInsufficientFunds", "insufficient_funds"),
        ("tok_unknown123", "invalid_payment_token"),
    ],
)
async def test_test_tokens_decide_the_outcome(tmp_path: Path, token: str, reason: str) -> None:
    assert outcome_for(token) == reason
    psp = await SimulatedProvider.open(f"sqlite+aiosqlite:///{tmp_path / 'psp.db'}")
    result = await psp.charge(ChargeRequest("b-1", 1000, "USD", token))
    await psp.close()
    assert result.succeeded is (reason == "")
    assert result.failure_reason == reason
    assert result.charge_id.startswith("ch_")


async def test_same_idempotency_key_never_charges_twice(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'psp.db'}"
    psp = await SimulatedProvider.open(url)
    first = await psp.charge(ChargeRequest("b-1", 1000, "USD", "tok_visa"))
    concurrent = await asyncio.gather(
        *(psp.charge(ChargeRequest("b-1", 1000, "USD", "tok_visa")) for _ in range(5))
    )
    await psp.close()
    # The ledger outlives the process, like a real PSP's: a restarted caller is still de-duplicated.
    reopened = await SimulatedProvider.open(url)
    later = await reopened.charge(ChargeRequest("b-1", 1000, "USD", "tok_visa"))
    async with reopened._engine.connect() as conn:
        charges = (await conn.execute(select(func.count()).select_from(ledger))).scalar_one()
    await reopened.close()
    assert {r.charge_id for r in [*concurrent, later]} == {first.charge_id}
    assert all(r.replayed for r in [*concurrent, later]) and not first.replayed
    assert charges == 1


async def test_latency_is_simulated_without_blocking_other_charges(tmp_path: Path) -> None:
    psp = await SimulatedProvider.open(f"sqlite+aiosqlite:///{tmp_path / 'psp.db'}", latency_seconds=0.3)
    started = time.monotonic()
    await asyncio.gather(*(psp.charge(ChargeRequest(f"b-{i}", 100, "EUR", "tok_visa")) for i in range(10)))
    elapsed = time.monotonic() - started
    await psp.close()
    assert 0.3 <= elapsed < 2.0
