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

import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import DecodeError, Message
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError
from sqlalchemy import Table, func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from choreo.db import now_us
from choreo.envelope import Envelope, EnvelopeError
from choreo.inbox import inbox_table
from choreo.pull import PullReader, PullStalled
from choreo.upserts import dialect_insert

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RestoreContext:
    """Where a restore writes: the replay's transaction, and the fact's metadata."""

    conn: AsyncConnection
    envelope: Envelope
    sequence: int


@dataclass(frozen=True, slots=True)
class Restore:
    """How one of the service's own facts is applied to its tables again.

    Attributes:
        message_type: The fact's protobuf class.
        apply: Writes the state the fact announces; must be idempotent.
        handled_by: The durable consumer whose handler emitted this fact, if one did: the
            fact that caused it (``ce-causationid``) goes back into that consumer's inbox.
    """

    message_type: type[Message]
    apply: Callable[[Any, RestoreContext], Awaitable[None]]
    handled_by: str | None = None

    @property
    def type_name(self) -> str:
        return str(self.message_type.DESCRIPTOR.full_name)


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
    restores: Sequence[Restore]


@dataclass
class Report:
    """What a replay did."""

    facts: int = 0
    applied: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    last_sequence: int = 0
    seconds: float = 0.0


class RecoveryError(Exception):
    """The replay could not complete; the database holds what was applied so far."""


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


async def recover_if_lost(
    nc: NATS, js: JetStreamContext, engine: AsyncEngine, recovery: Recovery, *, service: str
) -> Report | None:
    """Rebuilds the database by replay when it is empty and the stream is not (start-up)."""
    last = await stream_last_sequence(js, recovery.stream)
    if last == 0 or not await is_empty(engine, recovery):
        return None
    log.warning(
        "%s's database is empty but stream %s holds facts up to %d: rebuilding it by replay",
        service,
        recovery.stream,
        last,
        extra={"stream": recovery.stream},
    )
    report = await replay(nc, js, engine, recovery, service=service)
    log.warning(
        "rebuilt %s from %d facts of %s in %.1fs",
        service,
        report.facts,
        recovery.stream,
        report.seconds,
        extra={"stream": recovery.stream, "stream_seq": report.last_sequence},
    )
    return report


async def replay(
    nc: NATS,
    js: JetStreamContext,
    engine: AsyncEngine,
    recovery: Recovery,
    *,
    service: str,
    batch: int = 500,
    stall_retries: int = 5,
) -> Report:
    """Applies every fact of the service's stream, in order, up to its last sequence now.

    Raises:
        RecoveryError: the stream could not be read to its end.
    """
    started = time.monotonic()
    report = Report()
    target = await stream_last_sequence(js, recovery.stream)
    restores = {r.type_name: r for r in recovery.restores}
    stalls = 0
    while report.last_sequence < target:
        consumer = f"{service}-recovery-{uuid.uuid4().hex[:12]}"
        await js.add_consumer(
            recovery.stream,
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
        reader = PullReader(nc, recovery.stream, consumer, batch=batch)
        try:
            await reader.start()
            while report.last_sequence < target:
                msgs = await reader.next_batch(batch)
                async with engine.begin() as conn:
                    for msg in msgs:
                        sequence = msg.metadata.sequence.stream
                        if sequence > target:
                            break
                        await _apply(conn, msg.subject, msg.headers, msg.data, sequence, restores, report)
                        report.last_sequence = sequence
        except PullStalled as exc:
            stalls += 1
            if stalls > stall_retries:
                raise RecoveryError(
                    f"replay of {recovery.stream} stalled at {report.last_sequence}: {exc}"
                ) from exc
            log.warning(
                "replay of %s stalled (%s); resuming at %d", recovery.stream, exc, report.last_sequence + 1
            )
        finally:
            await reader.stop()
            try:
                await js.delete_consumer(recovery.stream, consumer)
            except Exception as exc:  # it expires on its own
                log.debug("could not delete %s: %r", consumer, exc)
    report.seconds = time.monotonic() - started
    return report


async def _apply(
    conn: AsyncConnection,
    subject: str,
    headers: dict[str, str] | None,
    data: bytes,
    sequence: int,
    restores: dict[str, Restore],
    report: Report,
) -> None:
    report.facts += 1
    try:
        env = Envelope.from_headers(subject, headers, data)
        restore = restores.get(env.type)
        if restore is None:
            report.skipped[env.type] = report.skipped.get(env.type, 0) + 1
            return
        message = env.decode(restore.message_type)
    except (EnvelopeError, DecodeError) as exc:
        # The service's own stream should hold nothing like it; it changed no state either.
        log.error("replay skips unreadable message at %d: %s", sequence, exc, extra={"stream_seq": sequence})
        report.skipped["unreadable"] = report.skipped.get("unreadable", 0) + 1
        return
    await restore.apply(message, RestoreContext(conn, env, sequence))
    if restore.handled_by and env.causation_id:
        await conn.execute(
            dialect_insert(inbox_table, conn.dialect.name)
            .values(
                consumer=restore.handled_by,
                event_id=env.causation_id,
                stream_sequence=0,
                processed_at_us=now_us(),
            )
            .on_conflict_do_nothing(index_elements=["consumer", "event_id"])
        )
    report.applied += 1
