"""Creating bookings: validate, save PENDING with ``BookingCreated``, reply.

Commands arrive in batches (``choreo.commands.CommandServer``); a batch is one
transaction, so under load one commit serves hundreds of bookings. The booking
row and its ``BookingCreated`` fact (in the outbox) commit together: the fact is
published if and only if the booking exists. The payment token is sealed to the
payment service's key before the fact is built (``choreo.sealing``): neither the
fact nor booking's database (the outbox row, the bookings table) holds it in the clear.

A command past its deadline (its requester gave up) is never committed: the
deadlines are checked as the last step of the transaction, right before the
commit, and a batch with an expired command is rolled back and run again
without it. What remains is the commit itself, which the requester's margin
past the deadline covers (``choreo.commands``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError
from nats.aio.msg import Msg
from sqlalchemy import Select, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from booking.domain import BookingStatus, effective_quantity, request_fingerprint, same_request
from booking.requests import validate_booking_request
from booking.tables import bookings
from booking.topology import CREATE
from choreo.booking.v1 import commands_pb2, events_pb2
from choreo.clock import to_timestamp
from choreo.commands import deadline_of, deadline_passed
from choreo.db import now_us
from choreo.envelope import H_CORRELATION, H_ID, Envelope
from choreo.errors import Failure, classify
from choreo.ids import new_id
from choreo.metrics import Stages
from choreo.outbox import add_to_outbox
from choreo.sealing import TokenSealer

log = logging.getLogger(__name__)


Reply = commands_pb2.CreateBookingReply


@dataclass(frozen=True, slots=True)
class CreateRequest:
    """A decoded, valid create command and the workflow it starts."""

    command: commands_pb2.CreateBookingCommand
    correlation_id: str
    command_id: str
    #: Unix time after which the requester no longer waits (``None``: no deadline).
    deadline: float | None = None

    @property
    def key(self) -> tuple[str, str] | None:
        return (self.command.user_id, self.command.idempotency_key) if self.command.idempotency_key else None

    def fingerprint(self, booking_id: str) -> str:
        """The request's fingerprint, salted with the id of the booking it creates."""
        c = self.command
        return request_fingerprint(
            c.amount_cents,
            c.currency,
            c.payment_token,
            salt=booking_id,
            email=c.email,
            resource_id=c.resource_id,
            quantity=c.quantity,
        )

    def is_request_of(self, row: Any) -> bool:
        """Whether a stored booking was made by this same request (a retry)."""
        c = self.command
        return same_request(
            row["request_hash"],
            row["booking_id"],
            c.amount_cents,
            c.currency,
            c.payment_token,
            c.email,
            c.resource_id,
            c.quantity,
        )


def error_reply(code: commands_pb2.CommandErrorCode.ValueType, message: str, field: str = "") -> Reply:
    return Reply(error=commands_pb2.CommandError(code=code, message=message, field=field))


def parse_request(msg: Msg) -> CreateRequest | Reply:
    """Decodes and validates one request; returns an error reply when it is not acceptable."""
    command = commands_pb2.CreateBookingCommand()
    try:
        command.ParseFromString(msg.data)
    except DecodeError as exc:
        return error_reply(commands_pb2.COMMAND_ERROR_CODE_INVALID_ARGUMENT, f"undecodable command: {exc}")
    error = validate_booking_request(
        command.user_id,
        command.amount_cents,
        command.currency,
        command.payment_token,
        command.idempotency_key,
        command.email,
        command.resource_id,
        command.quantity,
    )
    if error is not None:
        return error_reply(commands_pb2.COMMAND_ERROR_CODE_INVALID_ARGUMENT, str(error), error.field)
    headers = msg.headers or {}
    command_id = headers.get(H_ID) or new_id()
    return CreateRequest(command, headers.get(H_CORRELATION) or new_id(), command_id, deadline_of(msg))


def record_from_row(row: Any) -> commands_pb2.BookingRecord:
    """The reply's view of a stored booking (``row`` is a mapping of the bookings columns)."""
    return commands_pb2.BookingRecord(
        booking_id=row["booking_id"],
        user_id=row["user_id"],
        amount_cents=row["amount_cents"],
        currency=row["currency"],
        state=BookingStatus(row["status"]).to_proto(),
        correlation_id=row["correlation_id"],
        payment_id=row["payment_id"],
        cancellation_reason=row["cancellation_reason"],
        created_at=to_timestamp(row["created_at_us"]),
        updated_at=to_timestamp(row["updated_at_us"]),
        resource_id=row["resource_id"],
        quantity=row["quantity"],
    )


async def create_bookings(
    conn: AsyncConnection,
    requests: Sequence[CreateRequest],
    source: str,
    sealer: TokenSealer,
    *,
    payment_timeout_seconds: int | None = None,
) -> list[Reply]:
    """Saves the new bookings of a batch and their ``BookingCreated`` facts, in the caller's transaction.

    Each fact carries the payment token sealed by ``sealer``, never the token itself, and,
    with ``payment_timeout_seconds``, its ``pay_by``: when the booking times out if still
    PENDING, after which payment starts no charge (``booking.timeouts``).

    A request whose idempotency key was already used by the same user replays
    the stored booking (or is refused if its parameters differ).
    """
    known = await _existing_by_key(conn, [r.key for r in requests if r.key is not None])
    replies: list[Reply] = []
    rows: list[dict[str, Any]] = []
    facts: list[Envelope] = []
    for req in requests:
        key = req.key
        if key is not None and key in known:
            replies.append(_replay(known[key], req))
            continue
        c = req.command
        now = now_us()
        booking_id = new_id()
        row: dict[str, Any] = {
            "booking_id": booking_id,
            "user_id": c.user_id,
            "amount_cents": c.amount_cents,
            "currency": c.currency,
            "status": BookingStatus.PENDING.value,
            "correlation_id": req.correlation_id,
            "payment_id": "",
            "cancellation_reason": "",
            "idempotency_key": c.idempotency_key or None,
            "request_hash": req.fingerprint(booking_id),
            "resource_id": c.resource_id,
            "quantity": effective_quantity(c.resource_id, c.quantity),
            "created_at_us": now,
            "updated_at_us": now,
        }
        rows.append(row)
        if key is not None:
            known[key] = row
        event = events_pb2.BookingCreated(
            booking_id=row["booking_id"],
            user_id=c.user_id,
            amount_cents=c.amount_cents,
            currency=c.currency,
            sealed_payment_token=sealer.seal(c.payment_token, bound_to=row["booking_id"]),
            created_at=to_timestamp(now),
            pay_by=to_timestamp(now + payment_timeout_seconds * 1_000_000)
            if payment_timeout_seconds
            else None,
            idempotency_key=c.idempotency_key,
            request_fingerprint=row["request_hash"],
            email=c.email,
            resource_id=row["resource_id"],
            quantity=row["quantity"],
        )
        facts.append(
            CREATE.wrap(event, source=source, correlation_id=req.correlation_id, causation_id=req.command_id)
        )
        replies.append(Reply(booking=record_from_row(row)))
    if rows:
        await conn.execute(insert(bookings), rows)
        await add_to_outbox(conn, facts)
    return replies


def _replay(row: Any, req: CreateRequest) -> Reply:
    if not req.is_request_of(row):
        return error_reply(
            commands_pb2.COMMAND_ERROR_CODE_IDEMPOTENCY_CONFLICT,
            "idempotency_key was already used with different parameters",
            "idempotency_key",
        )
    return Reply(booking=record_from_row(row), replayed=True)


def existing_by_key_query(keys: Sequence[tuple[str, str]]) -> Select[Any]:
    """The bookings that may hold these (user, idempotency key) pairs (the caller filters exact pairs).

    Both columns are constrained, so the lookup is a search of the unique index on
    (user_id, idempotency_key), never a scan of the table.
    """
    c = bookings.c
    return select(bookings).where(
        c.user_id.in_({u for u, _ in keys}), c.idempotency_key.in_({k for _, k in keys})
    )


async def _existing_by_key(conn: AsyncConnection, keys: list[tuple[str, str]]) -> dict[tuple[str, str], Any]:
    if not keys:
        return {}
    result = await conn.execute(existing_by_key_query(keys))
    wanted = set(keys)
    found = {}
    for row in result.mappings():
        key = (row["user_id"], row["idempotency_key"])
        if key in wanted:
            found[key] = dict(row)
    return found


class _DeadlinePassed(Exception):
    """A request of the transaction expired before its commit: roll back."""


def _check_deadlines(requests: Iterable[CreateRequest]) -> None:
    now = time.time()
    if any(deadline_passed(r.deadline, now) for r in requests):
        raise _DeadlinePassed


class CreateBookingHandler:
    """Serves batches of ``cmd.booking.create`` requests.

    Args:
        engine: The booking database.
        source: ``ce-source`` of the facts (the service name).
        sealer: Seals each payment token to the payment service's key.
        on_commit: Called after a commit that queued facts (wakes the outbox relay).
        stages: Where to add each batch's ``command_transaction`` (``choreo.metrics``).
        payment_timeout_seconds: The payment timeout, for each fact's ``pay_by``.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        source: str,
        on_commit: Callable[[], None],
        stages: Stages | None = None,
        *,
        sealer: TokenSealer,
        payment_timeout_seconds: int | None = None,
    ) -> None:
        self._engine = engine
        self._pay_within = payment_timeout_seconds
        self._source = source
        self._sealer = sealer
        self._on_commit = on_commit
        self._stages = stages or Stages(source)

    async def __call__(self, msgs: Sequence[Msg]) -> list[bytes | None]:
        """One reply per message; ``None`` for a request not executed because its deadline passed."""
        replies: list[Reply | None] = []
        accepted: dict[int, CreateRequest] = {}
        for i, msg in enumerate(msgs):
            parsed = parse_request(msg)
            if isinstance(parsed, CreateRequest):
                accepted[i] = parsed
                replies.append(None)
            else:
                replies.append(parsed)
        while accepted:
            # Requests that expired meanwhile (or made the last attempt roll back) are left out.
            now = time.time()
            accepted = {i: r for i, r in accepted.items() if not deadline_passed(r.deadline, now)}
            if not accepted:
                break
            results: Sequence[Reply | None]
            try:
                with self._stages.timed("command_transaction"):
                    async with self._engine.begin() as conn:
                        results = await create_bookings(
                            conn,
                            list(accepted.values()),
                            self._source,
                            self._sealer,
                            payment_timeout_seconds=self._pay_within,
                        )
                        _check_deadlines(accepted.values())
            except _DeadlinePassed:
                continue
            except Exception as exc:
                # e.g. a concurrent replica took the same idempotency key: settle each on its own.
                log.warning("create batch of %d failed (%r); retrying one by one", len(accepted), exc)
                results = [await self._create_one(req) for req in accepted.values()]
            self._on_commit()
            for i, reply in zip(accepted, results, strict=True):
                replies[i] = reply
            break
        return [r.SerializeToString() if r is not None else None for r in replies]

    async def _create_one(self, req: CreateRequest) -> Reply | None:
        try:
            async with self._engine.begin() as conn:
                reply = (
                    await create_bookings(
                        conn, [req], self._source, self._sealer, payment_timeout_seconds=self._pay_within
                    )
                )[0]
                _check_deadlines([req])
                return reply
        except _DeadlinePassed:
            return None
        except Exception as exc:
            # The cause goes to the log; the reply says what the client may do, never the SQL.
            if classify(exc) is Failure.TRANSIENT:
                log.warning(
                    "create failed: database unavailable (%r)",
                    exc,
                    extra={"correlation_id": req.correlation_id},
                )
                return error_reply(
                    commands_pb2.COMMAND_ERROR_CODE_UNAVAILABLE,
                    "the booking database is unavailable; the booking was not created",
                )
            log.exception("create failed", extra={"correlation_id": req.correlation_id})
            return error_reply(commands_pb2.COMMAND_ERROR_CODE_INTERNAL, "could not save the booking")
