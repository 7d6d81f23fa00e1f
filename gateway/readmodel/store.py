"""The read model's database: group-committed writes, and the queries behind the API.

All writes (the projection's batches and the bookings CreateBooking just got
back) go through one writer per process (``choreo.groupcommit``): whatever was
submitted while the previous transaction committed is merged into the next one.
That keeps SQLite to a single writer, makes read-merge-write safe without row
locks, and turns many small writes into one commit under load. A projection
batch and its stream checkpoint always commit in the same transaction, so the
read model is exactly-once with respect to the streams.

The read model can be thrown away and rebuilt by replay at any time: when its
schema version is not the code's (``open``), and when a stream it projects was
replaced (``rebuild``, called by the feed that notices). A rebuild empties the
projected tables in the writer's turn and starts a new *generation*: batches the
feeds prepared before it are refused (``StaleBatch``), and the feeds, told
through ``on_rebuild``, start over from sequence 1.

Hot paths are SQLAlchemy Core statements compiled once and run with
``executemany`` (see ``gateway.readmodel.bulk``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Table, bindparam, delete, inspect, select, text, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from choreo.groupcommit import GroupCommit
from choreo.metrics import Stages
from choreo.upserts import insert_new, upsert
from gateway.readmodel.bulk import BulkStatement
from gateway.readmodel.merge import conflicting, merge
from gateway.readmodel.model import BookingView, Change, Cursor, Status, TraceCursor, TraceRecord
from gateway.readmodel.recent import RecentViews
from gateway.readmodel.tables import (
    PROJECTED_TABLES,
    SCHEMA_VERSION,
    TABLES,
    ReadModelBase,
    bookings_table,
    checkpoints_table,
    read_model_meta_table,
    trace_events_table,
)

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
    stream_created: str


@dataclass(slots=True)
class WriteBatch:
    """Writes that must commit together.

    Attributes:
        trace: Facts to index (an already indexed event id is skipped).
        changes: Booking changes, applied in order with ``merge``.
        checkpoints: Stream -> last sequence whose effect is in this batch.
        stream_ids: Stream -> identity of the stream those sequences belong to.
        restart: The checkpoints start over (a stream replaced): they may go backwards.
        generation: The read model's generation the batch was read for (``None``: any,
            for writes that do not come from a stream).
    """

    trace: list[TraceRecord] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)
    checkpoints: dict[str, int] = field(default_factory=dict)
    stream_ids: dict[str, str] = field(default_factory=dict)
    generation: int | None = None
    restart: bool = False


class StaleBatch(Exception):
    """The read model was rebuilt after this batch was read; re-read from the new checkpoint."""


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
        resource_id=row.resource_id,
        quantity=row.quantity,
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
        recent_views: Committed views kept in memory (``gateway.readmodel.recent``); 0 reads every
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
        # Its own task commits, so a caller that is cancelled never abandons a transaction.
        self._writes: GroupCommit[WriteBatch, None] = GroupCommit(
            self._commit_batches, name="read-model-writer"
        )
        # One transaction at a time: the writer's, or a rebuild's.
        self._turn = asyncio.Lock()
        self.commits = 0
        #: Bumped by every rebuild; batches of an older generation are refused.
        self.generation = 0
        #: Called after a rebuild (the feeds start over).
        self.on_rebuild: list[Callable[[], None]] = []

    async def create_tables(self) -> bool:
        """Creates the tables, or empties them when the database has another schema version.

        Returns:
            Whether the database had projected rows of another version (then dropped:
            the feeds rebuild them by replay from sequence 1).
        """
        async with self._writer.begin() as conn:
            rebuilt = await conn.run_sync(_prepare_schema)
        if rebuilt:
            log.warning(
                "the read model had another schema version than %d: dropped it; rebuilding by replay",
                SCHEMA_VERSION,
            )
        return rebuilt

    async def rebuild(self, generation: int, reason: str) -> None:
        """Empties the projected tables and starts a new generation (once per ``generation``).

        Args:
            generation: The generation the caller saw; a rebuild already done since is enough.
            reason: Why, for the log.
        """
        async with self._turn:
            if generation != self.generation:
                return
            log.warning("rebuilding the read model by replay: %s", reason)
            async with self._writer.begin() as conn:
                for table in PROJECTED_TABLES:
                    await conn.execute(delete(table))
            self.generation += 1
            self._recent.clear()
        for listener in self.on_rebuild:
            listener()

    # -- writes -------------------------------------------------------------------------------------

    async def write(self, batch: WriteBatch) -> None:
        """Commits ``batch`` (possibly together with others); returns once it is durable.

        Raises:
            StaleBatch: the read model was rebuilt after ``batch`` was read; nothing was written.
            Exception: the transaction failed; nothing of ``batch`` was written.
        """
        await self._writes.submit(batch)

    async def _commit_batches(self, batches: list[WriteBatch]) -> list[Exception | None]:
        """One transaction for the batches of the current generation; the others are refused."""
        async with self._turn:
            current = [b.generation is None or b.generation == self.generation for b in batches]
            outcomes: list[Exception | None] = [
                None if ok else StaleBatch("the read model was rebuilt") for ok in current
            ]
            if not any(current):
                return outcomes
            try:
                with self._stages.timed("projection_transaction"):
                    changed = await self._commit([b for b, ok in zip(batches, current, strict=True) if ok])
            except Exception as exc:  # every batch of the transaction fails with it
                return [exc if ok else stale for ok, stale in zip(current, outcomes, strict=True)]
            self.commits += 1
            self._recent.committed(changed)
        if changed and self._on_commit is not None:
            try:
                self._on_commit(changed)
            except Exception:  # the writes are durable: their writers succeeded whatever a listener did
                log.exception("a read model commit listener failed")
        return outcomes

    async def _commit(self, batches: Sequence[WriteBatch]) -> dict[str, BookingView]:
        trace = [t for b in batches for t in b.trace]
        changes = [c for b in batches for c in b.changes]
        checkpoints: dict[str, _Checkpoint] = {}
        for b in batches:
            for stream, seq in b.checkpoints.items():
                if b.restart or stream not in checkpoints or seq > checkpoints[stream].last_sequence:
                    checkpoints[stream] = _Checkpoint(stream, seq, b.stream_ids.get(stream, ""))
        async with self._writer.begin() as conn:
            await self._insert_trace.execute(conn, trace)
            changed = await self._apply_changes(conn, changes)
            await self._upsert_checkpoints.execute(conn, list(checkpoints.values()))
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
                    "booking %s is %s (%s) and a fact says %s: the booking service never does this; "
                    "CANCELLED wins",
                    change.booking_id,
                    current.status if current else "?",
                    current.cancellation_reason if current else "",
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
        return (await self.position(stream))[0]

    async def position(self, stream: str) -> tuple[int, str]:
        """The checkpoint of ``stream`` and the identity of the stream it belongs to ("" if unknown)."""
        t = checkpoints_table.c
        async with self._reader.connect() as conn:
            row = (
                await conn.execute(select(t.last_sequence, t.stream_created).where(t.stream == stream))
            ).first()
        return (int(row.last_sequence), str(row.stream_created or "")) if row is not None else (0, "")

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

    async def trace(
        self, correlation_id: str, *, limit: int | None = None, after: TraceCursor | None = None
    ) -> list[TraceRecord]:
        """A workflow's indexed facts by (time, stream, sequence, id), after ``after``, at most ``limit``."""
        t = trace_events_table.c
        key = (t.occurred_at_us, t.stream, t.stream_sequence, t.event_id)
        stmt = select(trace_events_table).where(t.correlation_id == correlation_id)
        if after is not None:
            position = (after.occurred_at_us, after.stream, after.stream_sequence, after.event_id)
            stmt = stmt.where(tuple_(*key) > tuple_(*position))
        stmt = stmt.order_by(*key).limit(limit)
        async with self._reader.connect() as conn:
            return [_trace(row) for row in await conn.execute(stmt)]

    async def correlation_of(self, booking_id: str) -> str | None:
        """The workflow a booking belongs to (every fact about it carries it)."""
        async with self._reader.connect() as conn:
            stmt = select(bookings_table.c.correlation_id).where(bookings_table.c.booking_id == booking_id)
            value = (await conn.execute(stmt)).scalar()
        return str(value) if value else None

    async def correlation_owners(self, correlation_id: str) -> tuple[bool, set[str]]:
        """Whether facts of the workflow are indexed, and the users of the bookings they name.

        Found through the trace index (``correlation_id`` is indexed there, not on bookings):
        facts that name no booking the read model knows add no owner.
        """
        t, b = trace_events_table.c, bookings_table.c
        stmt = (
            select(t.booking_id, b.user_id)
            .select_from(trace_events_table.outerjoin(bookings_table, b.booking_id == t.booking_id))
            .where(t.correlation_id == correlation_id)
            .distinct()
        )
        async with self._reader.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return bool(rows), {row.user_id for row in rows if row.user_id}

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


_VERSION = "schema_version"


def _prepare_schema(conn: Connection) -> bool:
    """Creates the tables at the code's schema version; drops them first if another one is stored."""
    existing = set(inspect(conn).get_table_names())
    version: str | None = None
    if read_model_meta_table.name in existing:
        stmt = select(read_model_meta_table.c.value).where(read_model_meta_table.c.name == _VERSION)
        version = conn.execute(stmt).scalar()
    stale = version != str(SCHEMA_VERSION) and bool(existing & {t.name for t in TABLES})
    if stale:
        ReadModelBase.metadata.drop_all(conn, tables=TABLES)
    ReadModelBase.metadata.create_all(conn, tables=TABLES)
    if version != str(SCHEMA_VERSION):
        conn.execute(
            upsert(read_model_meta_table, conn.dialect.name, "name"),
            {"name": _VERSION, "value": str(SCHEMA_VERSION)},
        )
    return stale
