"""Answering ``BookingStatsQuery`` (served by ``choreo.commands.CommandServer``).

The window is the bookings created in ``[since, until)``: ``since`` unset means from
the first booking, ``until`` unset means now. The reply echoes the window it used
(``since`` only when it was given, ``until`` always). A window that ends before it
starts (``until``; ``since`` when it is in the future and ``until`` unset), or a
timestamp no calendar holds, is refused with ``INVALID_ARGUMENT`` naming the field.
A database that cannot answer gives ``UNAVAILABLE`` (the contract has no other code
for a failure; the cause goes to the log, never to the reply).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

from google.protobuf.message import DecodeError
from google.protobuf.timestamp_pb2 import Timestamp
from nats.aio.msg import Msg
from sqlalchemy.ext.asyncio import AsyncEngine

from analytics.stats import Stats, window_stats
from choreo.analytics.v1 import queries_pb2
from choreo.clock import from_timestamp, is_valid_timestamp, to_timestamp
from choreo.commands import deadline_of, deadline_passed
from choreo.db import now_us, read_only
from choreo.errors import Failure, classify

log = logging.getLogger(__name__)

Reply = queries_pb2.BookingStatsReply


class InvalidQuery(ValueError):
    """A query refused as it is; ``field`` names the offending one."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field


def error_reply(code: queries_pb2.QueryErrorCode.ValueType, message: str, field: str = "") -> Reply:
    return Reply(error=queries_pb2.QueryError(code=code, message=message, field=field))


def _time_us(query: queries_pb2.BookingStatsQuery, name: Literal["since", "until"]) -> int | None:
    if not query.HasField(name):
        return None
    ts: Timestamp = getattr(query, name)
    if not is_valid_timestamp(ts):
        raise InvalidQuery(f"{name} is not a valid timestamp", name)
    return from_timestamp(ts)


def parse_window(data: bytes, now: int) -> tuple[int | None, int]:
    """The window ``(since_us, until_us)`` a query asks for.

    Raises:
        InvalidQuery: The query is undecodable, a timestamp is invalid, or ``until`` is before ``since``.
    """
    query = queries_pb2.BookingStatsQuery()
    try:
        query.ParseFromString(data)
    except DecodeError as exc:
        raise InvalidQuery(f"undecodable query: {exc}") from None
    since = _time_us(query, "since")
    until = _time_us(query, "until")
    if until is None:
        if since is not None and since > now:
            raise InvalidQuery("since is in the future (until is unset, so the window ends now)", "since")
        return since, now
    if since is not None and until < since:
        raise InvalidQuery("until is before since", "until")
    return since, until


def stats_reply(stats: Stats, since_us: int | None, until_us: int) -> Reply:
    body = queries_pb2.BookingStats(
        bookings_created=stats.created,
        bookings_confirmed=stats.confirmed,
        bookings_cancelled=stats.cancelled,
        cancellation_reasons=stats.cancellation_reasons,
        confirmed_amount_cents_by_currency=stats.confirmed_amount_cents_by_currency,
        settle_p50_ms=stats.settle_ms.get(50, 0.0),
        settle_p95_ms=stats.settle_ms.get(95, 0.0),
        settle_p99_ms=stats.settle_ms.get(99, 0.0),
        until=to_timestamp(until_us),
    )
    if since_us is not None:
        body.since.CopyFrom(to_timestamp(since_us))
    return Reply(stats=body)


async def answer(engine: AsyncEngine, data: bytes) -> Reply:
    """The reply to one encoded ``BookingStatsQuery``."""
    try:
        since, until = parse_window(data, now_us())
    except InvalidQuery as exc:
        return error_reply(queries_pb2.QUERY_ERROR_CODE_INVALID_ARGUMENT, str(exc), exc.field)
    try:
        async with read_only(engine) as conn:
            if conn.dialect.name == "postgresql":
                # One snapshot for every figure of the reply.
                await conn.execution_options(isolation_level="REPEATABLE READ")
            stats = await window_stats(conn, since, until)
            await conn.rollback()
    except Exception as exc:
        if classify(exc) is Failure.TRANSIENT:
            log.warning("stats query failed: database unavailable (%r)", exc)
        else:  # not a passing outage: the trace is for whoever fixes it
            log.exception("stats query failed")
        return error_reply(
            queries_pb2.QUERY_ERROR_CODE_UNAVAILABLE, "the analytics database is unavailable; try again"
        )
    return stats_reply(stats, since, until)


class BookingStatsHandler:
    """Answers batches of ``BookingStatsQuery`` requests, one reply each (``CommandServer``'s handler)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def __call__(self, msgs: Sequence[Msg]) -> list[bytes | None]:
        """One reply per request; ``None`` for one whose requester stopped waiting before its turn."""
        replies: list[bytes | None] = []
        for msg in msgs:
            if deadline_passed(deadline_of(msg)):
                replies.append(None)
            else:
                replies.append((await answer(self._engine, msg.data)).SerializeToString())
        return replies
