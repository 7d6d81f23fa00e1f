"""A payment provider simulator that behaves like a real PSP's test mode.

Test tokens decide the outcome: ``tok_visa`` succeeds; ``tok_chargeDeclined``
fails with ``card_declined``; ``tok_chargeDeclinedInsufficientFunds`` with
``insufficient_funds``; any other well-formed token with
``invalid_payment_token``. Like a real PSP, it remembers idempotency keys on its
own side (its ledger database), so a charge retried after the payment service
crashed returns the first result instead of charging again. The ledger also
lets tests count charges per booking.
"""

from __future__ import annotations

import asyncio
import uuid

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import Field, SQLModel

from choreo.db import big_int, create_tables, make_engine, now_us
from payment.provider import ChargeRequest, ChargeResult

TEST_TOKENS: dict[str, str] = {
    "tok_visa": "",
    "tok_chargeDeclined": "card_declined",
    "tok_chargeDeclinedInsufficientFunds": "insufficient_funds",
}


def outcome_for(token: str) -> str:
    """The failure reason a test token produces (empty: success)."""
    return TEST_TOKENS.get(token, "invalid_payment_token")


class LedgerCharge(SQLModel, table=True):
    """One charge attempt the simulated provider made."""

    __tablename__ = "psp_charges"

    charge_id: str = Field(primary_key=True, max_length=64)
    # Not unique on purpose: the ledger must be able to show a double charge if a caller ever made one.
    idempotency_key: str = Field(index=True, max_length=128)
    amount_cents: int = big_int()
    currency: str = Field(max_length=3)
    succeeded: bool
    failure_reason: str = Field(default="", max_length=64)
    created_at_us: int = big_int()


ledger = LedgerCharge.__table__  # type: ignore[attr-defined]


class SimulatedProvider:
    """The simulator; see the module docstring for the test tokens.

    Args:
        engine: The ledger database.
        latency_seconds: Delay before answering, like a network round-trip.
    """

    def __init__(self, engine: AsyncEngine, latency_seconds: float = 0.0) -> None:
        self._engine = engine
        self._latency = latency_seconds

    @classmethod
    async def open(cls, ledger_url: str, latency_seconds: float = 0.0) -> SimulatedProvider:
        engine = make_engine(ledger_url)
        await create_tables(engine, [ledger])
        return cls(engine, latency_seconds)

    async def charge(self, request: ChargeRequest) -> ChargeResult:
        if self._latency:
            await asyncio.sleep(self._latency)
        async with self._engine.begin() as conn:
            earlier = (
                await conn.execute(select(ledger).where(ledger.c.idempotency_key == request.idempotency_key))
            ).first()
            if earlier is not None:
                return ChargeResult(
                    earlier.charge_id, earlier.succeeded, earlier.failure_reason, replayed=True
                )
            reason = outcome_for(request.payment_token)
            charge_id = f"ch_{uuid.uuid4().hex}"
            await conn.execute(
                insert(ledger).values(
                    charge_id=charge_id,
                    idempotency_key=request.idempotency_key,
                    amount_cents=request.amount_cents,
                    currency=request.currency,
                    succeeded=not reason,
                    failure_reason=reason,
                    created_at_us=now_us(),
                )
            )
        return ChargeResult(charge_id, not reason, reason)

    async def close(self) -> None:
        await self._engine.dispose()
