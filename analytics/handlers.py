"""Recording the booking facts: one upsert per fact, the same final row in every order.

Facts may arrive in any order (a ``BookingConfirmed`` before its ``BookingCreated``
after retries) and more than once (a copy past the inbox's retention, a replay). Each
fact writes only its own columns, and a conflicting second fact of a kind replaces the
first only when it is earlier by its own time (ties broken by its values), so the row
is the same whatever the order and however many copies arrive.

Times are the facts' own (``created_at``, ``confirmed_at``, ``cancelled_at``; the
envelope's ``ce-time`` when a fact lacks one), never the time of handling: a rebuild by
replay gives the same rows.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy.sql import Executable

from analytics.tables import CANCELLED, CONFIRMED, analytics_bookings
from choreo.booking.v1 import events_pb2 as booking_events
from choreo.clock import from_timestamp, rfc3339_us
from choreo.envelope import Envelope
from choreo.errors import PermanentError
from choreo.handler import HandlerContext, Route
from choreo.upserts import dialect_insert

#: The durable consumer of booking facts; replicas share it.
DURABLE = "analytics"

_t = analytics_bookings
#: The longest values the table holds (``analytics.tables``).
MAX_ID, MAX_CURRENCY, MAX_REASON = 64, 3, 128


class UnusableFactError(PermanentError):
    """A booking fact analytics cannot record (no booking id, a field too long): dead-lettered."""


def _created(dialect: str) -> Executable:
    ins = dialect_insert(_t, dialect)
    new = ins.excluded
    return ins.on_conflict_do_update(  # type: ignore[no-any-return]
        index_elements=["booking_id"],
        set_={"created_at_us": new.created_at_us, "amount_cents": new.amount_cents, "currency": new.currency},
        # The earliest creation wins (a second BookingCreated of one booking says the same);
        # equal times are ordered by amount, then currency.
        where=_t.c.created_at_us.is_(None)
        | (new.created_at_us < _t.c.created_at_us)
        | (
            (new.created_at_us == _t.c.created_at_us)
            & (
                (new.amount_cents < _t.c.amount_cents)
                | ((new.amount_cents == _t.c.amount_cents) & (new.currency < _t.c.currency))
            )
        ),
    )


def _settled(dialect: str) -> Executable:
    ins = dialect_insert(_t, dialect)
    new = ins.excluded
    return ins.on_conflict_do_update(  # type: ignore[no-any-return]
        index_elements=["booking_id"],
        set_={
            "outcome": new.outcome,
            "cancellation_reason": new.cancellation_reason,
            "settled_at_us": new.settled_at_us,
        },
        # The earliest settlement wins; equal times are ordered by outcome, then reason.
        where=_t.c.outcome.is_(None)
        | (new.settled_at_us < _t.c.settled_at_us)
        | (
            (new.settled_at_us == _t.c.settled_at_us)
            & (
                (new.outcome < _t.c.outcome)
                | ((new.outcome == _t.c.outcome) & (new.cancellation_reason < _t.c.cancellation_reason))
            )
        ),
    )


# Built once per dialect: building a statement per fact costs more than running it.
RECORD_CREATED = {d: _created(d) for d in ("sqlite", "postgresql")}
RECORD_SETTLED = {d: _settled(d) for d in ("sqlite", "postgresql")}


def fact_time_us(at: Timestamp, env: Envelope) -> int:
    """The fact's own time: its timestamp field, or its ``ce-time`` when the field is unset."""
    if at.seconds or at.nanos:
        return from_timestamp(at)
    at_us = rfc3339_us(env.time)  # None without an offset: no host's local time decides
    if at_us is None:
        raise UnusableFactError(f"fact {env.id} has no time (field unset, ce-time {env.time!r})")
    return at_us


def _check(booking_id: str, **limited: tuple[str, int]) -> None:
    if not booking_id or len(booking_id) > MAX_ID:
        raise UnusableFactError(f"booking id {booking_id[:80]!r} is empty or longer than {MAX_ID}")
    for name, (value, limit) in limited.items():
        if len(value) > limit:
            raise UnusableFactError(f"booking {booking_id}: {name} {value[:80]!r} is longer than {limit}")


def _row(booking_id: str, **values: Any) -> dict[str, Any]:
    """A full row of parameters: the fact's own columns, the others unset."""
    row: dict[str, Any] = {c.name: None for c in _t.columns}
    row.update(booking_id=booking_id, cancellation_reason="")
    row.update(values)
    return row


async def on_created(event: booking_events.BookingCreated, ctx: HandlerContext) -> None:
    _check(event.booking_id, currency=(event.currency, MAX_CURRENCY))
    row = _row(
        event.booking_id,
        created_at_us=fact_time_us(event.created_at, ctx.envelope),
        amount_cents=event.amount_cents,
        currency=event.currency,
    )
    await ctx.conn.execute(RECORD_CREATED[ctx.conn.dialect.name], row)


async def on_confirmed(event: booking_events.BookingConfirmed, ctx: HandlerContext) -> None:
    _check(event.booking_id)
    row = _row(
        event.booking_id, outcome=CONFIRMED, settled_at_us=fact_time_us(event.confirmed_at, ctx.envelope)
    )
    await ctx.conn.execute(RECORD_SETTLED[ctx.conn.dialect.name], row)


async def on_cancelled(event: booking_events.BookingCancelled, ctx: HandlerContext) -> None:
    _check(event.booking_id, reason=(event.reason, MAX_REASON))
    row = _row(
        event.booking_id,
        outcome=CANCELLED,
        cancellation_reason=event.reason,
        settled_at_us=fact_time_us(event.cancelled_at, ctx.envelope),
    )
    await ctx.conn.execute(RECORD_SETTLED[ctx.conn.dialect.name], row)


#: The routes of the ``analytics`` consumer; they emit nothing.
ROUTES: tuple[Route[Any], ...] = (
    Route(booking_events.BookingCreated, on_created),
    Route(booking_events.BookingConfirmed, on_confirmed),
    Route(booking_events.BookingCancelled, on_cancelled),
)
