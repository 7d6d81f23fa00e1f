"""Inbox: an event has its effect once per consumer, however often it arrives.

JetStream delivers at least once: a redelivery after a crash between commit and
ack, or the same fact published twice, must not act twice. The consumer records
``(consumer, event_id)`` in the same transaction as the handler's writes; an id
already recorded means the effect is already committed, so the event is acked
and skipped.

Rows are forgotten after ``retention_seconds`` (``InboxPruner``, the
``<PREFIX>_INBOX_RETENTION_SECONDS`` setting, 7 days by default). That is safe
as long as no copy of a handled fact can arrive later than that after it was
handled: a redelivery after a lost ack comes within ``ack_wait_seconds`` of
the service being up; a duplicate publish (a relay that died between publish
and delete) within its downtime plus the outbox claim lease; a DLQ re-drive
only concerns facts that were not handled. Restoring an old database backup,
or a service down longer than the retention, is outside that horizon.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable

from sqlalchemy import Index, bindparam, delete, insert, select, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlmodel import Field, SQLModel

from choreo.db import big_int, now_us

log = logging.getLogger(__name__)


class InboxRow(SQLModel, table=True):
    """An event whose effect has been committed."""

    __tablename__ = "inbox"
    __table_args__ = (Index("ix_inbox_processed_at_us", "processed_at_us"),)

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
#: One batch of expired rows; rows another pruner is deleting are skipped, not waited for.
_EXPIRED = (
    select(inbox_table.c.consumer, inbox_table.c.event_id)
    .where(inbox_table.c.processed_at_us < bindparam("cutoff"))
    .limit(bindparam("limit"))
    .with_for_update(skip_locked=True)
)
_PRUNE = delete(inbox_table).where(tuple_(inbox_table.c.consumer, inbox_table.c.event_id).in_(_EXPIRED))


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


async def prune_batch(engine: AsyncEngine, older_than_us: int, limit: int) -> int:
    """Deletes up to ``limit`` rows processed before ``older_than_us`` in one short transaction."""
    async with engine.begin() as conn:
        result = await conn.execute(_PRUNE, {"cutoff": older_than_us, "limit": limit})
    return int(result.rowcount)


class InboxPruner:
    """Forgets inbox rows older than the retention, continuously, in small batches.

    Each batch is its own transaction of at most ``batch_size`` deletes, so it
    never holds locks for long nor makes a handler's transaction wait more than
    one batch; the pruner pauses between batches and, once caught up, sleeps
    ``interval`` seconds.

    Args:
        engine: The service's database.
        retention_seconds: Age after which a row is deleted (see the module doc).
        batch_size: Rows deleted per transaction.
        interval: Seconds between passes.
        pause: Seconds between two batches of one pass.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        retention_seconds: float,
        *,
        batch_size: int = 1000,
        interval: float = 60.0,
        pause: float = 0.05,
    ) -> None:
        self._engine = engine
        self._retention_us = int(retention_seconds * 1e6)
        self._batch_size = batch_size
        self._interval = interval
        self._pause = pause
        self._stop = asyncio.Event()
        #: Rows deleted so far.
        self.pruned = 0

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        while not self._stop.is_set():
            try:
                await self.prune()
            except Exception as exc:  # the database may be down; the next pass catches up
                log.warning("inbox pruning failed: %r", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self._interval)

    async def prune(self) -> int:
        """One pass: deletes every expired row, batch by batch; returns how many."""
        cutoff = now_us() - self._retention_us
        total = 0
        while not self._stop.is_set():
            deleted = await prune_batch(self._engine, cutoff, self._batch_size)
            total += deleted
            self.pruned += deleted
            if deleted < self._batch_size:
                break
            await asyncio.sleep(self._pause)
        return total
