"""Attempts: how a fact's runs went, as opposed to how often JetStream delivered it.

JetStream's delivery count also grows for deliveries that never reached the
handler: the rest of a batch when the process crashed on one of its facts, the
messages handed back on a graceful stop, the buffer of a pull that stalled.
Judging a fact by that count dead-letters innocent batch-mates. So the consumer
keeps its own record, durably, of the facts that come back:

- ``failures``: runs that failed in a way that counts against the retry limit;
- ``running``: a run began (in a batch, or alone) and has not come back yet;
- ``runner``: the process that began it (``PROCESS``);
- ``crashes``: runs *alone* that a process began and never came back from.

A fact whose last run began in another process and never came back is a crash
*suspect*: it runs alone, so that if it kills the process again, only it is
counted. A run that failed in this process but could not be recorded (the
database blinked) is not a crash: this process is still alive.

A first delivery writes nothing unless it fails, so the normal path costs no
extra statement; a success deletes the row in the handler's own transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from sqlalchemy import Table, bindparam, case, delete, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlmodel import Field, SQLModel

from choreo.db import big_int, now_us
from choreo.upserts import dialect_insert

#: Identifies this process in ``runner``: a run begun under another value and never
#: finished vanished with that process.
PROCESS = uuid.uuid4().hex


class Running(IntEnum):
    NO = 0
    IN_BATCH = 1
    ALONE = 2


class AttemptRow(SQLModel, table=True):
    """The runs of one fact by one consumer that did not (yet) succeed."""

    __tablename__ = "delivery_attempts"

    consumer: str = Field(primary_key=True, max_length=128)
    event_id: str = Field(primary_key=True, max_length=64)
    runs: int = Field(default=0)
    failures: int = Field(default=0)
    crashes: int = Field(default=0)
    running: int = Field(default=0)
    runner: str = Field(default="", max_length=32)
    last_error: str = Field(default="", max_length=1000)
    updated_at_us: int = big_int()


attempts_table: Table = AttemptRow.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class Attempts:
    """A fact's record so far."""

    runs: int = 0
    failures: int = 0
    crashes: int = 0
    running: int = Running.NO
    runner: str = ""

    @property
    def suspect(self) -> bool:
        """Its last run began in another process and never came back: it may kill processes."""
        return self.running != Running.NO and self.runner != PROCESS


_t = attempts_table
_FIELDS = (_t.c.runs, _t.c.failures, _t.c.crashes, _t.c.running, _t.c.runner)
_READ = select(_t.c.event_id, *_FIELDS).where(
    _t.c.consumer == bindparam("consumer"), _t.c.event_id.in_(bindparam("ids", expanding=True))
)
_CLEAR = delete(_t).where(
    _t.c.consumer == bindparam("consumer"), _t.c.event_id.in_(bindparam("ids", expanding=True))
)


async def read(engine: AsyncEngine, consumer: str, event_ids: Sequence[str]) -> dict[str, Attempts]:
    """The records of these facts (facts without one are absent)."""
    async with engine.connect() as conn:
        rows = (await conn.execute(_READ, {"consumer": consumer, "ids": list(event_ids)})).all()
        await conn.rollback()
    return {row[0]: Attempts(*row[1:]) for row in rows}


async def begin(
    engine: AsyncEngine, consumer: str, event_ids: Sequence[str], *, alone: bool
) -> dict[str, Attempts]:
    """Records, and commits, that these facts' runs begin; returns their records.

    A run alone that follows a run alone begun by another process and never finished
    counts a crash.
    """
    running = Running.ALONE if alone else Running.IN_BATCH
    now = now_us()
    rows = [
        {
            "consumer": consumer,
            "event_id": e,
            "runs": 1,
            "running": int(running),
            "runner": PROCESS,
            "updated_at_us": now,
        }
        for e in event_ids
    ]
    async with engine.begin() as conn:
        ins = dialect_insert(_t, conn.dialect.name).values(rows)
        vanished_alone = (_t.c.running == int(Running.ALONE)) & (_t.c.runner != ins.excluded.runner)
        sets: dict[str, Any] = {
            "runs": _t.c.runs + 1,
            "crashes": _t.c.crashes + case((vanished_alone, 1), else_=0) if alone else _t.c.crashes,
            "running": ins.excluded.running,
            "runner": ins.excluded.runner,
            "updated_at_us": ins.excluded.updated_at_us,
        }
        stmt = ins.on_conflict_do_update(index_elements=["consumer", "event_id"], set_=sets).returning(
            _t.c.event_id, *_FIELDS
        )
        result = (await conn.execute(stmt)).all()
    return {row[0]: Attempts(*row[1:]) for row in result}


async def record_failure(
    engine: AsyncEngine, consumer: str, event_id: str, *, counted: bool, error: str
) -> Attempts:
    """Records that a run came back failed (``counted``: against the retry limit); returns the record."""
    async with engine.begin() as conn:
        ins = dialect_insert(_t, conn.dialect.name).values(
            consumer=consumer,
            event_id=event_id,
            runs=1,
            failures=int(counted),
            running=int(Running.NO),
            runner=PROCESS,
            last_error=error[:1000],
            updated_at_us=now_us(),
        )
        sets: dict[str, Any] = {
            "failures": _t.c.failures + int(counted),
            "running": ins.excluded.running,
            "last_error": ins.excluded.last_error,
            "updated_at_us": ins.excluded.updated_at_us,
        }
        stmt = ins.on_conflict_do_update(index_elements=["consumer", "event_id"], set_=sets).returning(
            *_FIELDS
        )
        row = (await conn.execute(stmt)).one()
    return Attempts(*row)


async def clear(conn: AsyncConnection, consumer: str, event_ids: Sequence[str]) -> None:
    """Forgets the records of facts that succeeded or were dead-lettered, in the caller's transaction."""
    if event_ids:
        await conn.execute(_CLEAR, {"consumer": consumer, "ids": list(event_ids)})
