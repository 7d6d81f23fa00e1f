"""The simulated PSP: test tokens, idempotency keys, latency."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from payment.provider import ChargeRequest
from payment.simulator import SimulatedProvider, ledger, outcome_for
from tests.support import row_count


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
    charges = await row_count(reopened._engine, ledger)
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


async def test_two_replicas_on_one_ledger_charge_each_key_once(database_url: str) -> None:
    """Two payment replicas (two simulators on one ledger) charging the same keys at once."""
    # Started together on an empty ledger, as two payment pods are.
    replicas = list(await asyncio.gather(*(SimulatedProvider.open(database_url) for _ in range(2))))
    keys = [f"b-{i}" for i in range(20)]
    try:
        results = await asyncio.gather(
            *(psp.charge(ChargeRequest(key, 1000, "EUR", "tok_visa")) for key in keys for psp in replicas)
        )
        async with replicas[0]._engine.connect() as conn:
            per_key = dict(
                (
                    await conn.execute(
                        select(ledger.c.idempotency_key, func.count()).group_by(ledger.c.idempotency_key)
                    )
                ).all()
            )
    finally:
        for psp in replicas:
            await psp.close()
    assert per_key == dict.fromkeys(keys, 1), "a key was charged twice"
    by_key: dict[str, set[str]] = {}
    for (key, _), result in zip(((k, p) for k in keys for p in replicas), results, strict=True):
        by_key.setdefault(key, set()).add(result.charge_id)
    assert all(len(ids) == 1 for ids in by_key.values()), "both replicas must answer with the one charge"
    assert sum(not r.replayed for r in results) == len(keys)


async def test_a_ledger_that_already_charged_a_key_twice_is_refused_with_what_to_do(
    database_url: str,
) -> None:
    from sqlalchemy import insert, text

    from choreo.db import make_engine
    from payment.simulator import LedgerError

    engine = make_engine(database_url)
    async with engine.begin() as conn:
        await conn.run_sync(lambda sync: ledger.create(sync))
        # As a ledger made before keys were unique: no unique index.
        await conn.execute(text("DROP INDEX uq_psp_charges_idempotency_key"))
        row = {
            "amount_cents": 1,
            "currency": "EUR",
            "succeeded": True,
            "failure_reason": "",
            "created_at_us": 0,
        }
        await conn.execute(
            insert(ledger), [{**row, "charge_id": f"ch_{i}", "idempotency_key": "b-1"} for i in (1, 2)]
        )
    await engine.dispose()
    with pytest.raises(LedgerError, match="charged more than once"):
        await SimulatedProvider.open(database_url)
