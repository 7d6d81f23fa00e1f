"""The simulated PSP: test tokens, idempotency keys, latency."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from payment.provider import ChargeRequest, RefundRequest, RefundResult
from payment.simulator import SimulatedProvider, ledger, outcome_for, refunds_ledger
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


async def test_a_refund_gives_back_a_succeeded_charge_once(database_url: str) -> None:
    psp = await SimulatedProvider.open(database_url)
    try:
        charge = await psp.charge(ChargeRequest("b-1", 1000, "USD", "tok_visa"))
        first = await psp.refund(RefundRequest("b-1", "b-1:refund"))
        again = await psp.refund(RefundRequest("b-1", "b-1:refund"))
        other_key = await psp.refund(RefundRequest("b-1", "another-key"))  # still one refund per charge
        refunds = await row_count(psp._engine, refunds_ledger)
    finally:
        await psp.close()
    assert (first.refunded, first.replayed, first.charge_id) == (True, False, charge.charge_id)
    assert (first.amount_cents, first.currency) == (1000, "USD")
    assert first.refund_id.startswith("re_")
    assert (
        again
        == other_key
        == RefundResult(True, first.refund_id, charge.charge_id, 1000, "USD", replayed=True)
    )
    assert refunds == 1


@pytest.mark.parametrize("token", ["tok_chargeDeclined", None], ids=["declined", "never-charged"])
async def test_nothing_is_refunded_without_a_succeeded_charge(tmp_path: Path, token: str | None) -> None:
    psp = await SimulatedProvider.open(f"sqlite+aiosqlite:///{tmp_path / 'psp.db'}")
    try:
        if token is not None:
            await psp.charge(ChargeRequest("b-1", 1000, "USD", token))
        result = await psp.refund(RefundRequest("b-1", "b-1:refund"))
        refunds = await row_count(psp._engine, refunds_ledger)
    finally:
        await psp.close()
    assert (result, refunds) == (RefundResult(refunded=False), 0)


async def test_concurrent_refunds_of_one_charge_refund_it_once(database_url: str) -> None:
    """Two payment replicas (two simulators on one ledger) refunding one booking at once, twice each."""
    replicas = list(await asyncio.gather(*(SimulatedProvider.open(database_url) for _ in range(2))))
    try:
        charges = await asyncio.gather(
            *(replicas[0].charge(ChargeRequest(f"b-{i}", 1000, "EUR", "tok_visa")) for i in range(10))
        )
        results = await asyncio.gather(
            *(
                psp.refund(RefundRequest(f"b-{i}", f"b-{i}:refund"))
                for i in range(10)
                for psp in (*replicas, *replicas)
            )
        )
        async with replicas[0]._engine.connect() as conn:
            per_charge = dict(
                (
                    await conn.execute(
                        select(refunds_ledger.c.charge_key, func.count()).group_by(
                            refunds_ledger.c.charge_key
                        )
                    )
                ).all()
            )
    finally:
        for psp in replicas:
            await psp.close()
    assert per_charge == {f"b-{i}": 1 for i in range(10)}, "a charge was refunded twice"
    for i, charge in enumerate(charges):
        mine = results[i * 4 : (i + 1) * 4]
        assert {r.refund_id for r in mine} != {""} and len({r.refund_id for r in mine}) == 1
        assert all(r.refunded and r.charge_id == charge.charge_id for r in mine)
        assert sum(not r.replayed for r in mine) == 1
