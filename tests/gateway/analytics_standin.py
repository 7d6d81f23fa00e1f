"""A stand-in for the analytics service's query side: ``BookingStatsQuery`` over NATS request/reply.

It serves the contract's subject in the contract's queue group through the
runtime's own ``choreo.commands.CommandServer`` (deadlines, rejections, inbox
checks), as the real analytics service does, and answers what the test says.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from types import TracebackType

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from choreo.analytics.v1 import queries_pb2
from choreo.commands import CommandServer
from choreo.contract import command_options

#: The pinned subject and queue group of the query (issue 11).
SUBJECT = "query.analytics.booking_stats"
QUEUE = "analytics"

Answer = Callable[[queries_pb2.BookingStatsQuery], queries_pb2.BookingStatsReply]


def figures(query: queries_pb2.BookingStatsQuery) -> queries_pb2.BookingStatsReply:
    """Fixed statistics over the query's window (echoed, as analytics does)."""
    stats = queries_pb2.BookingStats(
        bookings_created=5,
        bookings_confirmed=3,
        bookings_cancelled=2,
        cancellation_reasons={"card_declined": 1, "insufficient_funds": 1},
        confirmed_amount_cents_by_currency={"EUR": 12_600, "USD": 700},
        settle_p50_ms=120.5,
        settle_p95_ms=480.0,
        settle_p99_ms=950.25,
    )
    if query.HasField("since"):
        stats.since.CopyFrom(query.since)
    if query.HasField("until"):
        stats.until.CopyFrom(query.until)
    else:
        stats.until.GetCurrentTime()
    return queries_pb2.BookingStatsReply(stats=stats)


class StandInAnalytics:
    """Answers ``BookingStatsQuery`` while in its ``async with`` block.

    Args:
        nc: NATS connection.
        answer: The reply to each query (default: ``figures``).
        delay: Seconds each batch takes before it is answered (a slow service).

    Attributes:
        queries: Every query received, in order.
        headers: The headers of each.
    """

    def __init__(self, nc: NATS, answer: Answer = figures, delay: float = 0.0) -> None:
        assert command_options(queries_pb2.BookingStatsQuery).subject == SUBJECT
        assert command_options(queries_pb2.BookingStatsQuery).queue == QUEUE
        self._answer = answer
        self._delay = delay
        self.queries: list[queries_pb2.BookingStatsQuery] = []
        self.headers: list[dict[str, str]] = []
        self.server = CommandServer(nc, SUBJECT, QUEUE, self._handle)
        self._task: asyncio.Task[None] | None = None

    async def _handle(self, batch: Sequence[Msg]) -> list[bytes | None]:
        if self._delay:
            await asyncio.sleep(self._delay)
        replies: list[bytes | None] = []
        for msg in batch:
            query = queries_pb2.BookingStatsQuery.FromString(msg.data)
            self.queries.append(query)
            self.headers.append(dict(msg.headers or {}))
            replies.append(self._answer(query).SerializeToString())
        return replies

    async def __aenter__(self) -> StandInAnalytics:
        self._task = asyncio.create_task(self.server.run())
        await asyncio.wait_for(self.server.ready.wait(), 5)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.server.stop()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(self._task, 10)
