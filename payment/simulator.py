"""A payment provider simulator that behaves like a real PSP's test mode.

Test tokens decide the outcome: ``tok_visa`` succeeds; ``tok_chargeDeclined``
fails with ``card_declined``; ``tok_chargeDeclinedInsufficientFunds`` with
``insufficient_funds``; any other well-formed token with
``invalid_payment_token``. Like a real PSP, it remembers idempotency keys on its
own side (its ledger database), so a charge retried after the payment service
crashed returns the first result instead of charging again. The ledger also
lets tests count charges per booking.

Charges that arrive together are written in one ledger transaction (group
commit, ``choreo.groupcommit``), as a PSP serving many merchants would: at load the ledger costs one
commit per batch, not one per charge.

The idempotency key is unique in the ledger and a charge is inserted only if
its key is new (``INSERT ... ON CONFLICT DO NOTHING``): two payment replicas, or
two processes of the simulator on one ledger, charging the same key at once
charge it once, and the loser answers with the winner's result.

Refunds are kept the same way (``psp_refunds``): a refund is made only of a
succeeded charge, at most once per charge and once per refund key (both unique,
inserted once), so tests can count the charges and refunds of a booking.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Index, bindparam, make_url, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlmodel import Field, SQLModel

from choreo.db import big_int, lock_schema, make_engine, now_us
from choreo.groupcommit import GroupCommit
from choreo.ids import uuid7
from choreo.upserts import dialect_insert
from payment.provider import ChargeRequest, ChargeResult, RefundRequest, RefundResult

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
    idempotency_key: str = Field(max_length=128)
    amount_cents: int = big_int()
    currency: str = Field(max_length=3)
    succeeded: bool
    failure_reason: str = Field(default="", max_length=64)
    created_at_us: int = big_int()


ledger = LedgerCharge.__table__  # type: ignore[attr-defined]
#: One charge per key. An explicit index, so that a ledger created before it existed gets it too.
_UNIQUE_KEY = Index("uq_psp_charges_idempotency_key", ledger.c.idempotency_key, unique=True)


class LedgerRefund(SQLModel, table=True):
    """One refund the simulated provider made: of one succeeded charge, at most once."""

    __tablename__ = "psp_refunds"

    refund_id: str = Field(primary_key=True, max_length=64)
    idempotency_key: str = Field(max_length=128, unique=True)
    charge_id: str = Field(max_length=64, unique=True)
    charge_key: str = Field(max_length=128)
    amount_cents: int = big_int()
    currency: str = Field(max_length=3)
    created_at_us: int = big_int()


refunds_ledger = LedgerRefund.__table__  # type: ignore[attr-defined]

# Built once: constructing a statement (and its cache key) per batch costs more than running it.
_CHARGES_OF = select(ledger).where(ledger.c.idempotency_key.in_(bindparam("keys", expanding=True)))
_SUCCEEDED_CHARGE = select(ledger).where(
    ledger.c.idempotency_key == bindparam("charge_key"), ledger.c.succeeded.is_(True)
)
_REFUND_OF = select(refunds_ledger).where(
    or_(
        refunds_ledger.c.idempotency_key == bindparam("refund_key"),
        refunds_ledger.c.charge_id == bindparam("charge_id"),
    )
)


class LedgerError(RuntimeError):
    """The ledger cannot be used as it is."""


class SimulatedProvider:
    """The simulator; see the module docstring for the test tokens.

    Args:
        engine: The ledger database.
        latency_seconds: Delay before answering, like a network round-trip.
    """

    def __init__(self, engine: AsyncEngine, latency_seconds: float = 0.0) -> None:
        self._engine = engine
        self._latency = latency_seconds
        self._charges: GroupCommit[ChargeRequest, ChargeResult] = GroupCommit(self._settle, name="psp-ledger")

    @classmethod
    async def open(cls, ledger_url: str, latency_seconds: float = 0.0) -> SimulatedProvider:
        engine = make_engine(ledger_url)
        try:
            async with engine.begin() as conn:
                await lock_schema(conn)  # payment replicas start together on one ledger
                await conn.run_sync(lambda sync: ledger.create(sync, checkfirst=True))
                await conn.run_sync(lambda sync: _UNIQUE_KEY.create(sync, checkfirst=True))
                await conn.run_sync(lambda sync: refunds_ledger.create(sync, checkfirst=True))
        except IntegrityError:
            await engine.dispose()
            raise LedgerError(
                f"the provider ledger at {make_url(ledger_url).render_as_string(hide_password=True)} "
                "holds idempotency keys charged more than once (made before keys were unique): "
                "refund and delete the extra charges, then start again"
            ) from None
        return cls(engine, latency_seconds)

    async def charge(self, request: ChargeRequest) -> ChargeResult:
        if self._latency:
            await asyncio.sleep(self._latency)
        return await self._charges.submit(request)

    async def _settle(self, batch: Sequence[ChargeRequest]) -> list[ChargeResult]:
        # A failure fails every charge of the batch: none of them was written.
        keys = list({req.idempotency_key for req in batch})
        async with self._engine.begin() as conn:
            known = await _charges_of(conn, keys)
            new_rows: dict[str, dict[str, object]] = {}
            for req in batch:
                key = req.idempotency_key
                if key in known or key in new_rows:
                    continue
                reason = outcome_for(req.payment_token)
                new_rows[key] = {
                    "charge_id": f"ch_{uuid7().hex}",
                    "idempotency_key": key,
                    "amount_cents": req.amount_cents,
                    "currency": req.currency,
                    "succeeded": not reason,
                    "failure_reason": reason,
                    "created_at_us": now_us(),
                }
            created: set[str] = set()
            if new_rows:
                # Insert-once: a key another process charged meanwhile inserts nothing here.
                insert_once = (
                    dialect_insert(ledger, conn.dialect.name)
                    .values(list(new_rows.values()))
                    .on_conflict_do_nothing(index_elements=["idempotency_key"])
                    .returning(ledger.c.idempotency_key)
                )
                created = set((await conn.execute(insert_once)).scalars())
                lost = [key for key in new_rows if key not in created]
                if lost:
                    known |= await _charges_of(conn, lost)
        results: list[ChargeResult] = []
        for req in batch:
            key = req.idempotency_key
            if key in created:
                row = new_rows[key]
                created.discard(key)  # a later request with the same key replays this charge
                known[key] = ChargeResult(
                    str(row["charge_id"]), bool(row["succeeded"]), str(row["failure_reason"]), replayed=True
                )
                results.append(
                    ChargeResult(str(row["charge_id"]), bool(row["succeeded"]), str(row["failure_reason"]))
                )
            else:
                results.append(known[key])
        return results

    async def refund(self, request: RefundRequest) -> RefundResult:
        """Refunds the key's succeeded charge once; see ``PaymentProvider.refund``."""
        if self._latency:
            await asyncio.sleep(self._latency)
        async with self._engine.begin() as conn:
            charge = (await conn.execute(_SUCCEEDED_CHARGE, {"charge_key": request.charge_key})).one_or_none()
            if charge is None:
                return RefundResult(refunded=False)
            keys = {"refund_key": request.idempotency_key, "charge_id": charge.charge_id}
            earlier = (await conn.execute(_REFUND_OF, keys)).first()
            if earlier is not None:
                return _refund_result(earlier, replayed=True)
            row = {
                "refund_id": f"re_{uuid7().hex}",
                "idempotency_key": request.idempotency_key,
                "charge_id": charge.charge_id,
                "charge_key": request.charge_key,
                "amount_cents": charge.amount_cents,
                "currency": charge.currency,
                "created_at_us": now_us(),
            }
            # Insert-once on either unique key: a refund another process made meanwhile wins.
            insert_once = (
                dialect_insert(refunds_ledger, conn.dialect.name).values(row).on_conflict_do_nothing()
            )
            if (await conn.execute(insert_once)).rowcount == 1:
                return RefundResult(
                    True, str(row["refund_id"]), charge.charge_id, charge.amount_cents, charge.currency
                )
            return _refund_result((await conn.execute(_REFUND_OF, keys)).one(), replayed=True)

    async def close(self) -> None:
        await self._charges.close()  # charges already asked for are written and answered
        await self._engine.dispose()


async def _charges_of(conn: AsyncConnection, keys: list[str]) -> dict[str, ChargeResult]:
    """The recorded charges of these keys, as replayed results."""
    rows = await conn.execute(_CHARGES_OF, {"keys": keys})
    return {
        row.idempotency_key: ChargeResult(row.charge_id, row.succeeded, row.failure_reason, replayed=True)
        for row in rows
    }


def _refund_result(row: Any, *, replayed: bool) -> RefundResult:
    return RefundResult(True, row.refund_id, row.charge_id, row.amount_cents, row.currency, replayed=replayed)
