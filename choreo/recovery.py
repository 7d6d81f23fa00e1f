"""Recovery by replay: a service that lost its database rebuilds it from its own stream.

A service's state is the sum of the facts it published: each one was written in
the same transaction as the state change it announces (the outbox). Replaying
its own stream from the start, and applying each fact's change again, gives
back the same rows. Each fact a handler emitted also says which fact it reacted
to (``ce-causationid``): recording that one in the consumer's inbox gives back
the de-duplication too, so a redelivery after the rebuild is still a duplicate.

Nothing is published or charged while rebuilding: restores write rows only, no
outbox, and no consumer runs before the rebuild is done. Restores must be
idempotent (insert-if-absent, updates guarded by the state they move from), so a
replay over a database that still holds part of its rows (a restored backup)
only fills in what is missing.

What it cannot give back: facts that were committed but never published (the
outbox rows of the last moments before the disk was lost) and state that no fact
announces. The streams must keep every fact (limits retention without a maximum
age, as choreo provisions them) for a replay to be complete.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

from google.protobuf.message import DecodeError, Message
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError
from sqlalchemy import Table, bindparam, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlmodel import Field, SQLModel

from choreo.db import big_int, now_us
from choreo.dispatch import Dispatch, UnknownFactType
from choreo.envelope import Envelope, EnvelopeError
from choreo.inbox import inbox_table
from choreo.pull import PullReader, PullStalled
from choreo.upserts import dialect_insert, upsert

log = logging.getLogger(__name__)

M = TypeVar("M", bound=Message)


@dataclass(frozen=True, slots=True)
class RestoreContext:
    """Where a restore writes: the replay's transaction, and the fact's metadata."""

    conn: AsyncConnection
    envelope: Envelope
    sequence: int


@dataclass(frozen=True, slots=True)
class Restore(Generic[M]):
    """How one of the service's own facts is applied to its tables again.

    Attributes:
        message_type: The fact's protobuf class; ``apply`` receives the fact decoded as it.
        apply: Writes the state the fact announces; must be idempotent.
        handled_by: The durable consumer whose handler emitted this fact, if one did: the
            fact that caused it (``ce-causationid``) goes back into that consumer's inbox.
    """

    message_type: type[M]
    apply: Callable[[M, RestoreContext], Awaitable[None]]
    handled_by: str | None = None


@dataclass(frozen=True, slots=True)
class Recovery:
    """A service's declaration of how to rebuild it.

    Attributes:
        stream: The stream the service owns (its facts).
        tables: Its state tables; all empty (with an empty inbox) means "database lost".
        restores: One per fact type that changes its state.
    """

    stream: str
    tables: Sequence[Table]
    restores: Sequence[Restore[Any]]


@dataclass
class Report:
    """What a replay did."""

    facts: int = 0
    applied: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    last_sequence: int = 0
    seconds: float = 0.0
    #: Facts the stream no longer holds at its start (their state cannot be rebuilt).
    missing: int = 0


class RecoveryError(Exception):
    """The replay could not complete; the database holds what was applied so far."""


class RecoveryStateRow(SQLModel, table=True):
    """A rebuild by replay: in progress until ``done``, resumed from ``last_sequence`` if interrupted."""

    __tablename__ = "recovery_state"

    stream: str = Field(primary_key=True, max_length=64)
    last_sequence: int = big_int()
    done: bool = False
    started_at_us: int = big_int()
    updated_at_us: int = big_int()


recovery_state_table: Table = RecoveryStateRow.__table__  # type: ignore[attr-defined]
_s = recovery_state_table
_STATE = select(_s.c.last_sequence, _s.c.done).where(_s.c.stream == bindparam("stream"))
_ADVANCE = (
    update(_s)
    .where(_s.c.stream == bindparam("s_stream"))
    .values(last_sequence=bindparam("s_last"), updated_at_us=bindparam("s_now"))
)
_FINISH = (
    update(_s).where(_s.c.stream == bindparam("s_stream")).values(done=True, updated_at_us=bindparam("s_now"))
)

#: Key of the PostgreSQL advisory lock that lets one replica at a time decide and rebuild ("rebuild").
_LOCK_KEY = 0x7265627569_6C64


async def is_empty(engine: AsyncEngine, recovery: Recovery) -> bool:
    """True when none of the service's tables (nor its inbox) holds a row."""
    async with engine.connect() as conn:
        for table in [*recovery.tables, inbox_table]:
            if (await conn.execute(select(func.count()).select_from(table))).scalar_one():
                await conn.rollback()
                return False
        await conn.rollback()
    return True


async def stream_last_sequence(js: JetStreamContext, stream: str) -> int:
    """The stream's last sequence (0 when it does not exist or holds nothing)."""
    try:
        state = (await js.stream_info(stream)).state
    except NotFoundError:
        return 0
    return int(state.last_seq) if state.messages else 0


@asynccontextmanager
async def _one_at_a_time(engine: AsyncEngine) -> AsyncIterator[None]:
    """Replicas on one PostgreSQL database decide and rebuild one at a time (SQLite: one process)."""
    if engine.dialect.name != "postgresql":
        yield
        return
    async with engine.connect() as conn:
        await conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _LOCK_KEY})
        await conn.commit()
        try:
            yield
        finally:
            await conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _LOCK_KEY})
            await conn.commit()


async def _state(engine: AsyncEngine, stream: str) -> tuple[int, bool] | None:
    async with engine.connect() as conn:
        row = (await conn.execute(_STATE, {"stream": stream})).one_or_none()
        await conn.rollback()
    return (int(row[0]), bool(row[1])) if row is not None else None


async def _begin(engine: AsyncEngine, stream: str) -> None:
    now = now_us()
    async with engine.begin() as conn:
        await conn.execute(
            upsert(_s, conn.dialect.name, "stream"),
            {"stream": stream, "last_sequence": 0, "done": False, "started_at_us": now, "updated_at_us": now},
        )


async def recover_if_lost(
    nc: NATS,
    js: JetStreamContext,
    engine: AsyncEngine,
    recovery: Recovery,
    *,
    service: str,
    progress: Callable[[int, int], None] | None = None,
) -> Report | None:
    """At start-up: rebuilds the database by replay when it is lost, or finishes a rebuild that was cut short.

    "Lost": the service's tables and inbox are empty while its stream holds facts. A
    rebuild records its progress in ``recovery_state`` in each batch's transaction, so a
    process killed while rebuilding resumes where it stopped instead of serving from a
    partial database; replicas on PostgreSQL take turns, so a second one waits and then
    finds the rebuild done.
    """
    stream = recovery.stream
    async with _one_at_a_time(engine):
        state = await _state(engine, stream)
        if state is not None and state[1]:
            return None
        if state is None:
            if not await stream_last_sequence(js, stream) or not await is_empty(engine, recovery):
                return None
            log.warning(
                "%s's database is empty but stream %s holds facts: rebuilding it by replay",
                service,
                stream,
                extra={"stream": stream},
            )
            start = 0  # replay() records the rebuild as begun
        else:
            start = state[0]
            log.warning(
                "%s's rebuild from %s was cut short at %d: resuming it",
                service,
                stream,
                start,
                extra={"stream": stream},
            )
        report = await replay(nc, js, engine, recovery, service=service, after=start, progress=progress)
    skipped = ", ".join(f"{n} {t}" for t, n in sorted(report.skipped.items())) or "none"
    log.warning(
        "rebuilt %s from %d facts of %s (up to %d) in %.1fs; skipped: %s",
        service,
        report.facts,
        stream,
        report.last_sequence,
        report.seconds,
        skipped,
        extra={"stream": stream, "stream_seq": report.last_sequence},
    )
    return report


async def replay(
    nc: NATS,
    js: JetStreamContext,
    engine: AsyncEngine,
    recovery: Recovery,
    *,
    service: str,
    after: int = 0,
    batch: int = 500,
    stall_retries: int = 5,
    progress: Callable[[int, int], None] | None = None,
) -> Report:
    """Applies the facts of the service's stream after sequence ``after``, in order, to its end.

    Each batch commits with the position reached (``recovery_state``); the last one marks
    the rebuild done. The end is where the consumer has nothing pending, not the stream's
    last sequence, which may name a deleted message.

    Raises:
        RecoveryError: the stream could not be read to its end.
    """
    started = time.monotonic()
    report = Report(last_sequence=after)
    stream = recovery.stream
    restores = Dispatch(recovery.restores)
    if after == 0:
        await _begin(engine, stream)
        await _warn_if_incomplete(js, stream, report)
    target = await stream_last_sequence(js, stream)
    stalls = 0
    finished = False
    while not finished:
        consumer = f"{service}-recovery-{uuid.uuid4().hex[:12]}"
        info = await js.add_consumer(
            stream,
            ConsumerConfig(
                name=consumer,
                description=f"{service} recovery by replay",
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                opt_start_seq=report.last_sequence + 1,
                ack_policy=AckPolicy.NONE,
                mem_storage=True,
                num_replicas=1,
                inactive_threshold=60.0,
            ),
        )
        finished = not info.num_pending
        reader = PullReader(nc, stream, consumer, batch=batch)
        try:
            if not finished:
                await reader.start()
            while not finished:
                msgs = await reader.next_batch(batch)
                async with engine.begin() as conn:
                    for msg in msgs:
                        meta = msg.metadata
                        await _apply(conn, msg, meta.sequence.stream, meta.timestamp, restores, report)
                        report.last_sequence = meta.sequence.stream
                        finished = not meta.num_pending
                    await conn.execute(
                        _ADVANCE, {"s_stream": stream, "s_last": report.last_sequence, "s_now": now_us()}
                    )
                if progress is not None:
                    progress(report.last_sequence, target)
                # SQLite runs on the loop's thread (choreo.compat.sqlite_inline) and a full pull
                # buffer returns at once: let the health endpoint answer between batches.
                await asyncio.sleep(0)
        except PullStalled as exc:
            stalls += 1
            if stalls > stall_retries:
                raise RecoveryError(f"replay of {stream} stalled at {report.last_sequence}: {exc}") from exc
            log.warning("replay of %s stalled (%s); resuming at %d", stream, exc, report.last_sequence + 1)
        finally:
            await reader.stop()
            try:
                await js.delete_consumer(stream, consumer)
            except Exception as exc:  # it expires on its own
                log.debug("could not delete %s: %r", consumer, exc)
    async with engine.begin() as conn:
        await conn.execute(_FINISH, {"s_stream": stream, "s_now": now_us()})
    report.seconds = time.monotonic() - started
    return report


async def _warn_if_incomplete(js: JetStreamContext, stream: str, report: Report) -> None:
    """A stream whose first facts are gone (purged, limits) cannot give back their state."""
    try:
        first = int((await js.stream_info(stream)).state.first_seq)
    except NotFoundError:
        return
    if first > 1:
        report.missing = first - 1
        log.error(
            "stream %s starts at sequence %d: the state of its first %d facts cannot be rebuilt",
            stream,
            first,
            first - 1,
            extra={"stream": stream},
        )


async def _apply(
    conn: AsyncConnection,
    msg: Msg,
    sequence: int,
    stored: datetime,
    restores: Dispatch[Restore[Any]],
    report: Report,
) -> None:
    report.facts += 1
    try:
        env = Envelope.from_headers(msg.subject, msg.headers, msg.data)
        restore, message = restores.decode(env)
    except UnknownFactType:
        report.skipped[env.type] = report.skipped.get(env.type, 0) + 1
        return
    except (EnvelopeError, DecodeError) as exc:
        # The service's own stream should hold nothing like it; it changed no state either.
        log.error("replay skips unreadable message at %d: %s", sequence, exc, extra={"stream_seq": sequence})
        report.skipped["unreadable"] = report.skipped.get("unreadable", 0) + 1
        return
    await restore.apply(message, RestoreContext(conn, env, sequence))
    if restore.handled_by and env.causation_id:
        # Dated like the fact, so inbox pruning treats it as the original record would be.
        await conn.execute(
            dialect_insert(inbox_table, conn.dialect.name)
            .values(
                consumer=restore.handled_by,
                event_id=env.causation_id,
                stream_sequence=0,
                processed_at_us=int(stored.timestamp() * 1_000_000),
            )
            .on_conflict_do_nothing(index_elements=["consumer", "event_id"])
        )
    report.applied += 1
