"""Attempts: how often a fact was really run, as opposed to how often JetStream delivered it.

JetStream's delivery count also grows for deliveries that never reached the
handler: the rest of a batch when the process crashed on one of its facts, the
messages handed back on a graceful stop, the buffer of a pull that stalled.
Judging a fact by that count dead-letters innocent batch-mates. So the consumer
keeps its own count, durably, only for facts that come back:

- ``started``: runs begun on a redelivery (recorded, and committed, before the run);
- ``returned``: runs that came back with a failure;
- ``failures``: failures that count against the retry limit (not transient ones).

``started - returned`` runs never came back: they crashed or hung the process.
A first delivery writes nothing unless it fails, so the normal path costs no
extra statement; a success deletes the row in the handler's own transaction.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Table, bindparam, delete, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlmodel import Field, SQLModel

from choreo.db import big_int, now_us
from choreo.upserts import dialect_insert


class AttemptRow(SQLModel, table=True):
    """The runs of one fact by one consumer that did not (yet) succeed."""

    __tablename__ = "delivery_attempts"

    consumer: str = Field(primary_key=True, max_length=128)
    event_id: str = Field(primary_key=True, max_length=64)
    started: int = Field(default=0)
    returned: int = Field(default=0)
    failures: int = Field(default=0)
    last_error: str = Field(default="", max_length=1000)
    updated_at_us: int = big_int()


attempts_table: Table = AttemptRow.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class Attempts:
    """A fact's record so far (``started`` includes a run that is just beginning)."""

    started: int = 0
    returned: int = 0
    failures: int = 0

    @property
    def vanished(self) -> int:
        """Runs that never came back: each one crashed or hung the process."""
        return max(0, self.started - self.returned - 1)


_t = attempts_table
_RETURNING = (_t.c.started, _t.c.returned, _t.c.failures)
_CLEAR = delete(_t).where(
    _t.c.consumer == bindparam("consumer"), _t.c.event_id.in_(bindparam("ids", expanding=True))
)
_READ = select(*_RETURNING).where(
    _t.c.consumer == bindparam("consumer"), _t.c.event_id == bindparam("event_id")
)


def _bump(dialect: str, *, started: int, returned: int, failures: int, error: str) -> object:
    ins = dialect_insert(_t, dialect).values(
        consumer=bindparam("consumer"),
        event_id=bindparam("event_id"),
        started=started,
        returned=returned,
        failures=failures,
        last_error=error,
        updated_at_us=bindparam("now"),
    )
    sets: dict[str, object] = {"updated_at_us": ins.excluded.updated_at_us}
    if started:
        sets["started"] = _t.c.started + started
    if returned:
        sets["returned"] = _t.c.returned + returned
        sets["last_error"] = ins.excluded.last_error
    if failures:
        sets["failures"] = _t.c.failures + failures
    return ins.on_conflict_do_update(index_elements=["consumer", "event_id"], set_=sets).returning(
        *_RETURNING
    )


async def begin_run(engine: AsyncEngine, consumer: str, event_id: str) -> Attempts:
    """Records, and commits, that a redelivered fact is about to run; returns its record."""
    async with engine.begin() as conn:
        stmt = _bump(conn.dialect.name, started=1, returned=0, failures=0, error="")
        row = (await conn.execute(stmt, {"consumer": consumer, "event_id": event_id, "now": now_us()})).one()  # type: ignore[call-overload]
    return Attempts(*row)


async def record_failure(
    engine: AsyncEngine, consumer: str, event_id: str, *, counted: bool, error: str, first_run: bool
) -> Attempts:
    """Records that a run came back failed (``counted``: against the retry limit); returns the record.

    ``first_run``: the failure is of a first delivery, whose run was not recorded as started.
    """
    async with engine.begin() as conn:
        stmt = _bump(
            conn.dialect.name,
            started=1 if first_run else 0,
            returned=1,
            failures=1 if counted else 0,
            error=error[:1000],
        )
        row = (await conn.execute(stmt, {"consumer": consumer, "event_id": event_id, "now": now_us()})).one()  # type: ignore[call-overload]
    return Attempts(*row)


async def read_attempts(conn: AsyncConnection, consumer: str, event_id: str) -> Attempts:
    row = (await conn.execute(_READ, {"consumer": consumer, "event_id": event_id})).one_or_none()
    return Attempts(*row) if row is not None else Attempts()


async def clear(conn: AsyncConnection, consumer: str, event_ids: list[str]) -> None:
    """Forgets the attempts of facts that succeeded or were dead-lettered, in the caller's transaction."""
    if event_ids:
        await conn.execute(_CLEAR, {"consumer": consumer, "ids": event_ids})
