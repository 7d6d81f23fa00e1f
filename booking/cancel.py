"""Cancelling a booking on its user's behalf: ``cmd.booking.cancel`` -> CANCELLED, ``BookingCancelled``.

A PENDING or CONFIRMED booking moves to CANCELLED with reason ``cancelled_by_user``
in one guarded UPDATE (its status IN ``USER_CANCELS_FROM``), and its
``BookingCancelled`` (with the booking's payment_id and resource_id) goes into the
outbox in the same transaction: the fact is published if and only if the booking
was cancelled. Payment refunds a captured payment on that fact, inventory releases
the reserved units; a payment that answers afterwards is late, not a contradiction
(``booking.payment_checks``).

The common case is one statement: the guard (status, and the requester unless it
may act for every user) is part of the UPDATE, and only an UPDATE that moved
nothing reads the booking to say why. A booking that is not the requester's is
answered NOT_FOUND, exactly as one that does not exist, so that nobody learns
which ids exist. Cancels are rare, so each request of a batch has its own
transaction (a refusal never rolls back another's cancel); as for creates
(``booking.create``), a request past its deadline is never committed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError
from nats.aio.msg import Msg
from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from booking.create import record_from_row
from booking.domain import CANCELLED_BY_USER, USER_CANCELS_FROM, BookingStatus
from booking.tables import bookings
from booking.topology import CANCEL
from choreo.booking.v1 import commands_pb2
from choreo.booking.v1 import events_pb2 as booking_events
from choreo.clock import to_timestamp
from choreo.commands import deadline_of, deadline_passed
from choreo.db import now_us
from choreo.envelope import H_ID
from choreo.errors import Failure, classify
from choreo.ids import new_id
from choreo.outbox import add_to_outbox
from choreo.validation import FieldError, check_id

log = logging.getLogger(__name__)

Reply = commands_pb2.CancelBookingReply

_CODES = commands_pb2.CommandErrorCode

_CANCEL_ANY = (
    update(bookings)
    .where(
        bookings.c.booking_id == bindparam("b_id"),
        bookings.c.status.in_([s.value for s in USER_CANCELS_FROM]),
    )
    .values(
        status=BookingStatus.CANCELLED.value,
        cancellation_reason=CANCELLED_BY_USER,
        updated_at_us=bindparam("b_now"),
    )
    .returning(*bookings.c)
)
#: The cancel of a requester that may act only for itself.
_CANCEL_OWN = _CANCEL_ANY.where(bookings.c.user_id == bindparam("b_user"))
_BOOKING = select(bookings.c.user_id, bookings.c.status).where(bookings.c.booking_id == bindparam("b_id"))


@dataclass(frozen=True, slots=True)
class CancelRequest:
    """A decoded, valid cancel command."""

    command: commands_pb2.CancelBookingCommand
    command_id: str
    #: Unix time after which the requester no longer waits (``None``: no deadline).
    deadline: float | None = None


def error_reply(code: commands_pb2.CommandErrorCode.ValueType, message: str, field: str = "") -> Reply:
    return Reply(error=commands_pb2.CommandError(code=code, message=message, field=field))


def validate_cancel(booking_id: str, user_id: str, any_user: bool) -> FieldError | None:
    """The first invalid field of a cancel command, or ``None`` (no requester: only with ``any_user``)."""
    return check_id("booking_id", booking_id, required=True) or check_id(
        "user_id", user_id, required=not any_user
    )


def parse_request(msg: Msg) -> CancelRequest | Reply:
    """Decodes and validates one request; returns an error reply when it is not acceptable."""
    command = commands_pb2.CancelBookingCommand()
    try:
        command.ParseFromString(msg.data)
    except DecodeError as exc:
        return error_reply(_CODES.COMMAND_ERROR_CODE_INVALID_ARGUMENT, f"undecodable command: {exc}")
    error = validate_cancel(command.booking_id, command.user_id, command.any_user)
    if error is not None:
        return error_reply(_CODES.COMMAND_ERROR_CODE_INVALID_ARGUMENT, str(error), error.field)
    headers = msg.headers or {}
    return CancelRequest(command, headers.get(H_ID) or new_id(), deadline_of(msg))


class _DeadlinePassed(Exception):
    """The request expired before its commit: roll back."""


async def cancel_booking(conn: AsyncConnection, req: CancelRequest, source: str) -> Reply:
    """Cancels one booking and queues its ``BookingCancelled``, in the caller's transaction."""
    c = req.command
    now = now_us()
    params: dict[str, Any] = {"b_id": c.booking_id, "b_now": now}
    if c.any_user:
        statement = _CANCEL_ANY
    else:
        statement, params["b_user"] = _CANCEL_OWN, c.user_id
    row = (await conn.execute(statement, params)).mappings().one_or_none()
    if row is None:
        return await _refusal(conn, req)
    fact = booking_events.BookingCancelled(
        booking_id=row["booking_id"],
        reason=CANCELLED_BY_USER,
        cancelled_at=to_timestamp(now),
        payment_id=row["payment_id"],
        resource_id=row["resource_id"],
    )
    # The booking's workflow: the cancellation, its refund and its release join its trace.
    envelope = CANCEL.wrap(
        fact, source=source, correlation_id=row["correlation_id"], causation_id=req.command_id
    )
    await add_to_outbox(conn, [envelope])
    log.info(
        "booking %s cancelled by its user",
        row["booking_id"],
        extra={"booking_id": row["booking_id"], "correlation_id": row["correlation_id"]},
    )
    return Reply(booking=record_from_row(row))


async def _refusal(conn: AsyncConnection, req: CancelRequest) -> Reply:
    """Why a cancel moved nothing: no such booking (for this requester), or already cancelled."""
    c = req.command
    found = (await conn.execute(_BOOKING, {"b_id": c.booking_id})).one_or_none()
    if found is None or (not c.any_user and found.user_id != c.user_id):
        return error_reply(_CODES.COMMAND_ERROR_CODE_NOT_FOUND, "no such booking", "booking_id")
    if found.status == BookingStatus.CANCELLED.value:
        return error_reply(
            _CODES.COMMAND_ERROR_CODE_FAILED_PRECONDITION, "the booking is already cancelled", "booking_id"
        )
    # A status USER_CANCELS_FROM holds, yet the guarded UPDATE moved nothing: a bug, not a refusal.
    raise RuntimeError(f"booking {c.booking_id} is {found.status} but could not be cancelled")


class CancelBookingHandler:
    """Serves batches of ``cmd.booking.cancel`` requests (``choreo.commands.CommandServer``).

    Args:
        engine: The booking database.
        source: ``ce-source`` of the facts (the service name).
        on_commit: Called after a commit that queued a fact (wakes the outbox relay).
    """

    def __init__(self, engine: AsyncEngine, source: str, on_commit: Callable[[], None]) -> None:
        self._engine = engine
        self._source = source
        self._on_commit = on_commit

    async def __call__(self, msgs: Sequence[Msg]) -> list[bytes | None]:
        """One reply per message; ``None`` for a request not executed because its deadline passed."""
        replies: list[bytes | None] = []
        for msg in msgs:
            parsed = parse_request(msg)
            reply = parsed if isinstance(parsed, Reply) else await self._cancel(parsed)
            replies.append(None if reply is None else reply.SerializeToString())
        return replies

    async def _cancel(self, req: CancelRequest) -> Reply | None:
        try:
            async with self._engine.begin() as conn:
                reply = await cancel_booking(conn, req, self._source)
                if deadline_passed(req.deadline, time.time()):
                    raise _DeadlinePassed
        except _DeadlinePassed:
            return None
        except Exception as exc:
            booking_id = req.command.booking_id
            # The cause goes to the log; the reply says what the client may do, never the SQL.
            if classify(exc) is Failure.TRANSIENT:
                log.warning("cancel of %s failed: database unavailable (%r)", booking_id, exc)
                return error_reply(
                    _CODES.COMMAND_ERROR_CODE_UNAVAILABLE,
                    "the booking database is unavailable; the booking was not cancelled",
                )
            log.exception("cancel of %s failed", booking_id)
            return error_reply(_CODES.COMMAND_ERROR_CODE_INTERNAL, "could not cancel the booking")
        if reply.WhichOneof("result") == "booking":
            self._on_commit()
        return reply
