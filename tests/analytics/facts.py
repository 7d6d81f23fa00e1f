"""Booking facts as booking publishes them, a data set of them, and its statistics by hand."""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from analytics.settings import AnalyticsSettings
from analytics.topology import STATS
from choreo.analytics.v1 import queries_pb2
from choreo.booking.v1 import events_pb2 as booking_events
from choreo.clock import to_timestamp
from choreo.contract import fact_subject
from choreo.envelope import Envelope
from tests.streams import BOOKING_STREAM

#: 2026-01-01T00:00:00Z in microseconds: the data set's first booking.
T0 = 1_767_225_600_000_000
SECOND = 1_000_000


@dataclass(frozen=True)
class Booking:
    """One booking of a data set: when it was created, for how much, and how it settled."""

    booking_id: str
    created_us: int
    amount_cents: int
    currency: str
    #: ``confirmed``, a cancellation reason, or "" while pending.
    outcome: str = ""
    #: Created to settled, in microseconds.
    settle_us: int = 0

    def facts(self) -> list[Envelope]:
        """Its facts in the order booking publishes them."""
        wf = f"wf-{self.booking_id}"
        created = booking_events.BookingCreated(
            booking_id=self.booking_id,
            user_id="u1",
            amount_cents=self.amount_cents,
            currency=self.currency,
            created_at=to_timestamp(self.created_us),
        )
        out = [wrap(created, wf)]
        settled_at = to_timestamp(self.created_us + self.settle_us)
        if self.outcome == "confirmed":
            out.append(
                wrap(booking_events.BookingConfirmed(booking_id=self.booking_id, confirmed_at=settled_at), wf)
            )
        elif self.outcome:
            cancelled = booking_events.BookingCancelled(
                booking_id=self.booking_id, reason=self.outcome, cancelled_at=settled_at
            )
            out.append(wrap(cancelled, wf))
        return out


def wrap(
    event: booking_events.BookingCreated | booking_events.BookingConfirmed | booking_events.BookingCancelled,
    wf: str,
) -> Envelope:
    return Envelope.wrap(event, source="booking", subject=fact_subject(type(event)), correlation_id=wf)


#: Seven bookings, one second apart, whose figures are worked out by hand in the tests.
SMALL = (
    Booking("b1", T0, 100, "EUR", "confirmed", 100_000),
    Booking("b2", T0 + SECOND, 250, "EUR", "confirmed", 300_000),
    Booking("b3", T0 + 2 * SECOND, 400, "USD", "confirmed", 200_000),
    Booking("b4", T0 + 3 * SECOND, 999, "EUR", "card_declined", 50_000),
    Booking("b5", T0 + 4 * SECOND, 500, "USD", "card_declined", 1_000_000),
    Booking("b6", T0 + 5 * SECOND, 700, "GBP", "payment_timeout", 700_000),
    Booking("b7", T0 + 6 * SECOND, 300, "EUR"),
)


def larger(n: int = 57) -> tuple[Booking, ...]:
    """``n`` bookings with uneven settle times (sub-millisecond parts), outcomes and currencies."""
    outcomes = ("confirmed", "confirmed", "card_declined", "confirmed", "insufficient_funds", "", "confirmed")
    currencies = ("EUR", "USD", "GBP")
    return tuple(
        Booking(
            f"L{i:03d}",
            T0 + i * 997_331,
            100 + 37 * i,
            currencies[i % 3],
            outcomes[i % len(outcomes)],
            (i * 7919) % 5_000_000 + 1234 if outcomes[i % len(outcomes)] else 0,
        )
        for i in range(n)
    )


def expected(bookings: tuple[Booking, ...] | list[Booking]) -> queries_pb2.BookingStats:
    """The statistics of ``bookings``, computed here without SQL (nearest-rank percentiles)."""
    settled = sorted(b.settle_us for b in bookings if b.outcome)
    reasons: dict[str, int] = {}
    amounts: dict[str, int] = {}
    for b in bookings:
        if b.outcome == "confirmed":
            amounts[b.currency] = amounts.get(b.currency, 0) + b.amount_cents
        elif b.outcome:
            reasons[b.outcome] = reasons.get(b.outcome, 0) + 1

    def pct(p: int) -> float:
        return settled[math.ceil(p * len(settled) / 100) - 1] / 1000 if settled else 0.0

    return queries_pb2.BookingStats(
        bookings_created=len(bookings),
        bookings_confirmed=sum(b.outcome == "confirmed" for b in bookings),
        bookings_cancelled=sum(bool(b.outcome) and b.outcome != "confirmed" for b in bookings),
        cancellation_reasons=reasons,
        confirmed_amount_cents_by_currency=amounts,
        settle_p50_ms=pct(50),
        settle_p95_ms=pct(95),
        settle_p99_ms=pct(99),
    )


def figures(stats: queries_pb2.BookingStats) -> queries_pb2.BookingStats:
    """The statistics without the window they echo."""
    copy = queries_pb2.BookingStats()
    copy.CopyFrom(stats)
    copy.ClearField("since")
    copy.ClearField("until")
    return copy


async def ask(
    nc: NATS, since_us: int | None = None, until_us: int | None = None
) -> queries_pb2.BookingStatsReply:
    """Asks analytics for the stats of a window over NATS request/reply, as the gateway does."""
    query = queries_pb2.BookingStatsQuery()
    if since_us is not None:
        query.since.CopyFrom(to_timestamp(since_us))
    if until_us is not None:
        query.until.CopyFrom(to_timestamp(until_us))
    msg = await nc.request(STATS.subject, query.SerializeToString(), timeout=5)
    return queries_pb2.BookingStatsReply.FromString(msg.data)


async def stats_of(
    nc: NATS, since_us: int | None = None, until_us: int | None = None
) -> queries_pb2.BookingStats:
    reply = await ask(nc, since_us, until_us)
    assert reply.WhichOneof("result") == "stats", reply
    return reply.stats


async def caught_up(js: JetStreamContext, durable: str = "analytics") -> bool:
    """Whether the durable has handled every fact of BOOKING (acknowledged, nothing pending)."""
    last = int((await js.stream_info(BOOKING_STREAM)).state.last_seq)
    try:
        info = await js.consumer_info(BOOKING_STREAM, durable)
    except Exception:
        return False
    return bool(info.ack_floor.stream_seq >= last and not info.num_pending and not info.num_ack_pending)


async def wait_caught_up(js: JetStreamContext, durable: str = "analytics", timeout: float = 15.0) -> None:
    """Waits until the durable has handled every fact of BOOKING."""
    deadline = time.monotonic() + timeout
    while not await caught_up(js, durable):
        assert time.monotonic() < deadline, f"{durable} did not handle every fact within {timeout}s"
        await asyncio.sleep(0.02)


def analytics_settings(nats_url: str, database_url: str, **extra: object) -> AnalyticsSettings:
    """The service on a test's nats-server and database: no health port, text logs, fast retries."""
    return AnalyticsSettings(
        nats_url=nats_url,
        database_url=database_url,
        health_port=0,
        log_format="text",
        max_deliveries=2,
        retry_backoff_seconds=0.05,
        **extra,  # type: ignore[arg-type]
    )
