"""The ``outbox`` table and the statements the relay and the operator run on it.

A row is a fact waiting to be published. The relay *claims* rows before it
publishes them (``claimed_until_us``: a lease), so several relays on one
database publish each row once; on PostgreSQL the claim skips rows another
relay is claiming at that moment (``FOR UPDATE SKIP LOCKED``), on SQLite the
claim runs in the writer's ``BEGIN IMMEDIATE`` transaction, which serializes
claims (one process per SQLite file is the supported deployment; a second one
would still claim correctly, only slower). A relay that dies keeps its claim
until the lease expires; then another relay (or its own restart) takes the rows.

Order per aggregate: a row is claimable only while no earlier row with the same
``ordering_key`` (the fact's correlation id: one booking's workflow) is left,
claimed, held back or parked. So a fact never overtakes an earlier fact of its
workflow; facts of other workflows go on.

A row that can never be published is *parked* (``parked_at_us``, with the
reason); it stays in the table, holding back the later facts of its workflow,
until an operator re-queues or discards it (``choreo outbox``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    LargeBinary,
    Text,
    bindparam,
    delete,
    exists,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import Field, SQLModel

from choreo.db import BigIntId, big_int, now_us
from choreo.envelope import Envelope


class OutboxRow(SQLModel, table=True):
    """A fact waiting to be published (or parked: see the module doc)."""

    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_ordering_key_id", "ordering_key", "id"),
        Index("ix_outbox_parked_at_us", "parked_at_us"),
    )

    id: int | None = Field(default=None, sa_column=Column(BigIntId, primary_key=True, autoincrement=True))
    event_id: str = Field(max_length=64)
    subject: str = Field(max_length=255)
    headers: str = Field(sa_column=Column(Text, nullable=False))
    payload: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at_us: int = big_int()
    #: The correlation id (the event id when there is none): facts with one key go out in id order.
    ordering_key: str = Field(sa_column=Column(Text, nullable=False, server_default=""))
    #: A relay is publishing the row until then (epoch microseconds); NULL: nobody is.
    claimed_until_us: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    #: Set when the row was parked as unpublishable; NULL while it is publishable.
    parked_at_us: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    parked_reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


outbox_table = OutboxRow.__table__  # type: ignore[attr-defined]
_t = outbox_table
_earlier = outbox_table.alias("earlier")

# Built once: constructing a statement (and its cache key) per round costs more than running it.
_INSERT = insert(_t)

#: The head row of each ordering key, unclaimed (or its claim expired) and not parked.
_HEADS = (
    select(_t.c.id)
    .where(
        _t.c.parked_at_us.is_(None),
        or_(_t.c.claimed_until_us.is_(None), _t.c.claimed_until_us < bindparam("now")),
        ~exists().where(_earlier.c.ordering_key == _t.c.ordering_key, _earlier.c.id < _t.c.id),
    )
    .order_by(_t.c.id)
    .limit(bindparam("limit"))
)
_CLAIMABLE = _HEADS.with_for_update(skip_locked=True)
_CLAIM = (
    update(_t)
    .where(_t.c.id.in_(_CLAIMABLE.scalar_subquery()))
    .values(claimed_until_us=bindparam("until"))
    .returning(_t.c.id, _t.c.event_id, _t.c.subject, _t.c.headers, _t.c.payload, _t.c.created_at_us)
)
_DELETE = delete(_t).where(_t.c.id.in_(bindparam("ids", expanding=True)))
_RELEASE = update(_t).where(_t.c.id.in_(bindparam("ids", expanding=True))).values(claimed_until_us=None)
_PARK = (
    update(_t)
    .where(_t.c.id == bindparam("row_id"))
    .values(parked_at_us=bindparam("at"), parked_reason=bindparam("reason"), claimed_until_us=None)
)
_RELEASE_ALL = update(_t).where(_t.c.claimed_until_us.is_not(None)).values(claimed_until_us=None)
_PARKED_COUNT = select(func.count()).select_from(_t).where(_t.c.parked_at_us.is_not(None))
#: The first publishable row (ids follow insertion), by the primary key's index: no scan.
_OLDEST = select(_t.c.created_at_us).where(_t.c.parked_at_us.is_(None)).order_by(_t.c.id).limit(1)


@dataclass(frozen=True, slots=True)
class Pending:
    """A claimed row, as the relay publishes it."""

    id: int
    event_id: str
    subject: str
    headers: dict[str, str]
    payload: bytes
    created_at_us: int


async def add_to_outbox(conn: AsyncConnection, envelopes: Sequence[Envelope]) -> None:
    """Queues events for publishing inside the caller's transaction."""
    if not envelopes:
        return
    now = now_us()
    await conn.execute(
        _INSERT,
        [
            {
                "event_id": e.id,
                "subject": e.subject,
                "headers": json.dumps(e.headers()),
                "payload": e.data,
                "created_at_us": now,
                "ordering_key": e.correlation_id or e.id,
            }
            for e in envelopes
        ],
    )


async def anything_to_claim(conn: AsyncConnection) -> bool:
    """Whether ``claim`` would find a row (a read: on SQLite, an idle poll never takes the write lock)."""
    return (await conn.execute(_HEADS, {"now": now_us(), "limit": 1})).first() is not None


async def release_all_claims(conn: AsyncConnection) -> None:
    """Frees every claim: for a relay that knows it is the database's only one (SQLite)."""
    await conn.execute(_RELEASE_ALL)


async def claim(conn: AsyncConnection, limit: int, lease_seconds: float) -> list[Pending]:
    """Claims up to ``limit`` publishable rows for ``lease_seconds``, oldest first."""
    now = now_us()
    result = await conn.execute(_CLAIM, {"now": now, "limit": limit, "until": now + int(lease_seconds * 1e6)})
    rows = sorted(result.all(), key=lambda r: r.id)
    return [
        Pending(r.id, r.event_id, r.subject, json.loads(r.headers), r.payload, r.created_at_us) for r in rows
    ]


async def settle(
    conn: AsyncConnection, *, published: Sequence[int], parked: dict[int, str], released: Sequence[int]
) -> None:
    """Deletes published rows, parks poison rows with their reason, frees rows to retry at once."""
    if published:
        await conn.execute(_DELETE, {"ids": list(published)})
    if parked:
        at = now_us()
        await conn.execute(_PARK, [{"row_id": i, "at": at, "reason": r} for i, r in parked.items()])
    if released:
        await conn.execute(_RELEASE, {"ids": list(released)})


async def parked_count(conn: AsyncConnection) -> int:
    return int((await conn.execute(_PARKED_COUNT)).scalar_one())


async def oldest_unpublished_us(conn: AsyncConnection) -> int | None:
    """When the oldest fact still waiting to be published (parked rows aside) was written, or None."""
    value = (await conn.execute(_OLDEST)).scalar_one_or_none()
    return None if value is None else int(value)


async def parked_rows(conn: AsyncConnection, limit: int) -> list[dict[str, Any]]:
    """Parked rows, oldest first, with how many later facts of their workflow each holds back."""
    held = (
        select(func.count())
        .select_from(_earlier)
        .where(_earlier.c.ordering_key == _t.c.ordering_key, _earlier.c.id > _t.c.id)
        .scalar_subquery()
    )
    query = (
        select(
            _t.c.id,
            _t.c.event_id,
            _t.c.subject,
            _t.c.ordering_key,
            func.length(_t.c.payload).label("payload_bytes"),
            _t.c.created_at_us,
            _t.c.parked_at_us,
            _t.c.parked_reason,
            held.label("holding_back"),
        )
        .where(_t.c.parked_at_us.is_not(None))
        .order_by(_t.c.id)
        .limit(limit)
    )
    return [dict(r) for r in (await conn.execute(query)).mappings()]


async def requeue(conn: AsyncConnection, ids: Sequence[int]) -> list[int]:
    """Makes parked rows publishable again; returns the ids that were parked."""
    result = await conn.execute(
        update(_t)
        .where(_t.c.id.in_(ids), _t.c.parked_at_us.is_not(None))
        .values(parked_at_us=None, parked_reason=None, claimed_until_us=None)
        .returning(_t.c.id)
    )
    return sorted(r.id for r in result)


async def discard(conn: AsyncConnection, ids: Sequence[int]) -> list[int]:
    """Deletes parked rows (never a publishable one); returns the ids deleted."""
    result = await conn.execute(
        delete(_t).where(_t.c.id.in_(ids), _t.c.parked_at_us.is_not(None)).returning(_t.c.id)
    )
    return sorted(r.id for r in result)
