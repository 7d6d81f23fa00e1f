"""The read model's database: group-committed writes, and the queries behind the API.

All writes (the projection's batches and the bookings CreateBooking just got
back) go through one writer per process: whatever was submitted while the
previous transaction committed is merged into the next one. That keeps SQLite
to a single writer, makes read-merge-write safe without row locks, and turns
many small writes into one commit under load. A projection batch and its
stream checkpoint always commit in the same transaction, so the read model is
exactly-once with respect to the streams.

Hot paths are SQLAlchemy Core statements compiled once and run with
``executemany`` (see ``gateway.bulk``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Table, bindparam, select, text, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from choreo.db import create_tables
from choreo.metrics import Stages
from choreo.upserts import insert_new, upsert
from gateway.bulk import BulkStatement
from gateway.facts import TraceRecord
from gateway.merge import BookingView, Change, Status, conflicting, merge
from gateway.paging import Cursor
from gateway.recent import RecentViews
from gateway.tables import TABLES, bookings_table, checkpoints_table, trace_events_table

log = logging.getLogger(__name__)

#: Ids per ``IN (...)`` lookup (well under every database's parameter limit).
_LOOKUP_CHUNK = 500

# Built once: constructing a statement per commit costs more than running it.
_LOAD = select(bookings_table).where(bookings_table.c.booking_id.in_(bindparam("ids", expanding=True)))
_GET = select(bookings_table).where(bookings_table.c.booking_id == bindparam("booking_id"))


@dataclass(frozen=True, slots=True)
class _Checkpoint:
    stream: str
    last_sequence: int


@dataclass(slots=True)
class WriteBatch:
    """Writes that must commit together.

    Attributes:
        trace: Facts to index (an already indexed event id is skipped).
        changes: Booking changes, applied in order with ``merge``.
        checkpoints: Stream -> last sequence whose effect is in this batch.
    """

    trace: list[TraceRecord] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)
    checkpoints: dict[str, int] = field(default_factory=dict)


def _view(row: Any) -> BookingView:
    return BookingView(
        booking_id=row.booking_id,
        user_id=row.user_id,
        amount_cents=row.amount_cents,
        currency=row.currency,
        status=Status(row.status),
        correlation_id=row.correlation_id,
        payment_id=row.payment_id,
        cancellation_reason=row.cancellation_reason,
        created_at_us=row.created_at_us,
        updated_at_us=row.updated_at_us,
    )


_TRACE_FIELDS = TraceRecord.__slots__


def _trace(row: Any) -> TraceRecord:
    return TraceRecord(**{name: getattr(row, name) for name in _TRACE_FIELDS})


class ReadModel:
    """Reads and writes the gateway's tables.

    Args:
        writer: Engine for writes (on SQLite, its transactions ``BEGIN IMMEDIATE``).
        reader: Engine for reads (may be the same engine).
        on_commit: Called after each commit with the bookings that changed, as committed.
        recent_views: Committed views kept in memory (``gateway.recent``); 0 reads every
            booking from the database.
        stages: Where to add each ``projection_transaction`` (``choreo.metrics``).
    """

    def __init__(
        self,
        writer: AsyncEngine,
        reader: AsyncEngine,
        on_commit: Callable[[dict[str, BookingView]], None] | None = None,
        recent_views: int = 10_000,
        stages: Stages | None = None,
    ) -> None:
        self._writer = writer
        self._reader = reader
        self._on_commit = on_commit
        self._recent = RecentViews(recent_views)
        self._stages = stages or Stages("gateway")
        dialect = writer.dialect
        # Trace rows and booking views map onto their tables column for column.
        self._insert_trace = BulkStatement(insert_new(trace_events_table, dialect.name, "event_id"), dialect)
        self._upsert_bookings = BulkStatement(
            upsert(bookings_table, dialect.name, "booking_id"), dialect, {"status": "status.value"}
        )
        self._upsert_checkpoints = BulkStatement(upsert(checkpoints_table, dialect.name, "stream"), dialect)
        self._pending: list[tuple[WriteBatch, asyncio.Future[None]]] = []
        self._writer_task: asyncio.Task[None] | None = None
        self.commits = 0

    async def create_tables(self) -> None:
        await create_tables(self._writer, TABLES)

    # -- writes -------------------------------------------------------------------------------------

    async def write(self, batch: WriteBatch) -> None:
        """Commits ``batch`` (possibly together with others); returns once it is durable.

        Raises:
            Exception: the transaction failed; nothing of ``batch`` was written.
        """
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((batch, future))
        if self._writer_task is None or self._writer_task.done():
            # A task of its own, so a caller that is cancelled never abandons a transaction.
            self._writer_task = asyncio.create_task(self._drain(), name="read-model-writer")
        await future

    async def _drain(self) -> None:
        while self._pending:
            jobs, self._pending = self._pending, []
            try:
                with self._stages.timed("projection_transaction"):
                    changed = await self._commit([batch for batch, _ in jobs])
            except Exception as exc:
                for _, future in jobs:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.commits += 1
            self._recent.committed(changed)
            for _, future in jobs:
                if not future.done():
                    future.set_result(None)
            if changed and self._on_commit is not None:
                self._on_commit(changed)

    async def _commit(self, batches: Sequence[WriteBatch]) -> dict[str, BookingView]:
        trace = [t for b in batches for t in b.trace]
        changes = [c for b in batches for c in b.changes]
        checkpoints: dict[str, int] = {}
        for b in batches:
            for stream, seq in b.checkpoints.items():
                checkpoints[stream] = max(seq, checkpoints.get(stream, 0))
        async with self._writer.begin() as conn:
            await self._insert_trace.execute(conn, trace)
            changed = await self._apply_changes(conn, changes)
            await self._upsert_checkpoints.execute(
                conn, [_Checkpoint(stream, seq) for stream, seq in checkpoints.items()]
            )
        return changed

    async def _apply_changes(self, conn: AsyncConnection, changes: list[Change]) -> dict[str, BookingView]:
        if not changes:
            return {}
        ids = list(dict.fromkeys(c.booking_id for c in changes))
        before: dict[str, BookingView] = {}
        missing = []
        for booking_id in ids:
            view = self._recent.get(booking_id)
            if view is None:
                missing.append(booking_id)
            else:
                before[booking_id] = view
        if missing:
            before.update(await self._load(conn, missing))
        after = dict(before)
        for change in changes:
            current = after.get(change.booking_id)
            if conflicting(current, change):
                log.warning(
                    "booking %s is %s; ignoring %s",
                    change.booking_id,
                    current.status if current else "?",
                    change.status,
                    extra={"correlation_id": change.correlation_id},
                )
            after[change.booking_id] = merge(current, change)
        changed = [view for booking_id, view in after.items() if before.get(booking_id) != view]
        await self._upsert_bookings.execute(conn, changed)
        return {view.booking_id: view for view in changed}

    async def _load(self, conn: AsyncConnection, ids: Sequence[str]) -> dict[str, BookingView]:
        found: dict[str, BookingView] = {}
        for start in range(0, len(ids), _LOOKUP_CHUNK):
            chunk = ids[start : start + _LOOKUP_CHUNK]
            result = await conn.execute(_LOAD, {"ids": chunk})
            for row in result:
                found[row.booking_id] = _view(row)
        return found

    # -- reads --------------------------------------------------------------------------------------

    async def checkpoint(self, stream: str) -> int:
        """The last sequence of ``stream`` whose effect is committed (0: none)."""
        async with self._reader.connect() as conn:
            stmt = select(checkpoints_table.c.last_sequence).where(checkpoints_table.c.stream == stream)
            value = (await conn.execute(stmt)).scalar()
        return int(value or 0)

    async def get(self, booking_id: str) -> BookingView | None:
        view = self._recent.get(booking_id)
        if view is not None:
            return view
        async with self._reader.connect() as conn:
            row = (await conn.execute(_GET, {"booking_id": booking_id})).first()
        return _view(row) if row is not None else None

    async def list_bookings(
        self, *, user_id: str, status: Status | None, limit: int, after: Cursor | None
    ) -> list[BookingView]:
        """Bookings newest first (by ``created_at``, then id), after ``after``, at most ``limit``."""
        t = bookings_table.c
        stmt = select(bookings_table)
        if user_id:
            stmt = stmt.where(t.user_id == user_id)
        if status is not None:
            stmt = stmt.where(t.status == str(status))
        if after is not None:
            stmt = stmt.where(
                tuple_(t.created_at_us, t.booking_id) < tuple_(after.created_at_us, after.booking_id)
            )
        stmt = stmt.order_by(t.created_at_us.desc(), t.booking_id.desc()).limit(limit)
        async with self._reader.connect() as conn:
            return [_view(row) for row in await conn.execute(stmt)]

    async def trace(self, correlation_id: str) -> list[TraceRecord]:
        """The indexed facts of a workflow (unordered)."""
        stmt = select(trace_events_table).where(trace_events_table.c.correlation_id == correlation_id)
        async with self._reader.connect() as conn:
            return [_trace(row) for row in await conn.execute(stmt)]

    async def correlation_of(self, booking_id: str) -> str | None:
        """The workflow a booking belongs to (every fact about it carries it)."""
        async with self._reader.connect() as conn:
            stmt = select(bookings_table.c.correlation_id).where(bookings_table.c.booking_id == booking_id)
            value = (await conn.execute(stmt)).scalar()
        return str(value) if value else None

    async def ping(self) -> None:
        """Raises when the database does not answer."""
        async with self._reader.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def count(self, table: str) -> int:
        """Rows in one of the read model's tables (operations and tests)."""
        tables: Iterable[Table] = TABLES
        target = next(t for t in tables if t.name == table)
        async with self._reader.connect() as conn:
            return int((await conn.execute(select(text("count(*)")).select_from(target))).scalar() or 0)
