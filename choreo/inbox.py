"""Inbox: an event has its effect once per consumer, however often it arrives.

JetStream delivers at least once: a redelivery after a crash between commit and
ack, or the same fact published twice, must not act twice. The consumer records
``(consumer, event_id)`` in the same transaction as the handler's writes; an id
already recorded means the effect is already committed, so the event is acked
and skipped.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import bindparam, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import Field, SQLModel

from choreo.db import big_int, now_us


class InboxRow(SQLModel, table=True):
    """An event whose effect has been committed."""

    __tablename__ = "inbox"

    consumer: str = Field(primary_key=True, max_length=128)
    event_id: str = Field(primary_key=True, max_length=64)
    stream_sequence: int = big_int(default=0)
    processed_at_us: int = big_int()


inbox_table = InboxRow.__table__  # type: ignore[attr-defined]

# Built once: constructing a statement (and its cache key) per batch costs more than running it.
_PROCESSED = select(inbox_table.c.event_id).where(
    inbox_table.c.consumer == bindparam("consumer"),
    inbox_table.c.event_id.in_(bindparam("ids", expanding=True)),
)
_RECORD = insert(inbox_table)


async def already_processed(conn: AsyncConnection, consumer: str, event_ids: Iterable[str]) -> set[str]:
    """The subset of ``event_ids`` whose effect is already committed."""
    ids = list(event_ids)
    if not ids:
        return set()
    rows = await conn.execute(_PROCESSED, {"consumer": consumer, "ids": ids})
    return {r[0] for r in rows}


async def record_processed(conn: AsyncConnection, consumer: str, events: Iterable[tuple[str, int]]) -> None:
    """Records ``(event_id, stream_sequence)`` pairs as processed, in the caller's transaction.

    A concurrent duplicate violates the primary key and rolls the whole
    transaction back, which is what we want: the other one won.
    """
    now = now_us()
    rows = [
        {"consumer": consumer, "event_id": eid, "stream_sequence": seq, "processed_at_us": now}
        for eid, seq in events
    ]
    if rows:
        await conn.execute(_RECORD, rows)
