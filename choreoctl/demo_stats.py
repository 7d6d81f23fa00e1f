"""The booking stats at the end of ``choreo up --demo``: ``GET /v1/stats`` over the demo's window.

The gateway asks the analytics service (NATS request/reply), which counts the
bookings created in ``[since, until)`` from its own copy of the facts. The demo
asks for the window that starts when it started, so the figures are those of
its own bookings, and compares them with what it saw; analytics is fed
asynchronously, so it asks again for a few seconds until they agree.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import httpx
from google.protobuf import json_format

from choreo.gateway.v1 import gateway_pb2

#: Seconds to wait for analytics to count every demo booking.
STATS_TIMEOUT = 15.0


@dataclass(frozen=True)
class ExpectedStats:
    """What the demo's own bookings add up to."""

    created: int
    confirmed: int
    cancelled: int
    reasons: Mapping[str, int] = field(default_factory=dict)
    amounts: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, settled: Sequence[tuple[str, str, int, str]]) -> ExpectedStats:
        """From each created booking's (status name, reason, amount in cents, currency)."""
        confirmed = [(amount, currency) for status, _, amount, currency in settled if status == "CONFIRMED"]
        amounts: Counter[str] = Counter()
        for amount, currency in confirmed:
            amounts[currency] += amount
        reasons = Counter(reason for status, reason, _, _ in settled if status == "CANCELLED")
        cancelled = sum(reasons.values())
        return cls(len(settled), len(confirmed), cancelled, dict(reasons), dict(amounts))

    def differences(self, stats: gateway_pb2.GetBookingStatsResponse) -> list[str]:
        """What ``stats`` counts otherwise (empty when they agree)."""
        pairs = [
            ("bookings_created", self.created, stats.bookings_created),
            ("bookings_confirmed", self.confirmed, stats.bookings_confirmed),
            ("bookings_cancelled", self.cancelled, stats.bookings_cancelled),
            ("cancellation_reasons", dict(self.reasons), dict(stats.cancellation_reasons)),
            (
                "confirmed_amount_cents_by_currency",
                dict(self.amounts),
                dict(stats.confirmed_amount_cents_by_currency),
            ),
        ]
        return [f"{name} is {got}, expected {want}" for name, want, got in pairs if want != got]


def window_start(now: dt.datetime | None = None) -> str:
    """``since`` for a window that starts now (RFC 3339, whole seconds, rounded down)."""
    moment = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).replace(microsecond=0)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


async def fetch_stats(
    http: httpx.AsyncClient,
    since: str,
    expected: ExpectedStats,
    *,
    token: str | None = None,
    timeout: float = STATS_TIMEOUT,
    interval: float = 0.25,
) -> tuple[gateway_pb2.GetBookingStatsResponse | None, list[str]]:
    """The stats of the window from ``since``, asked until they agree with ``expected`` or ``timeout``.

    Returns:
        The last stats answered (``None`` if none), and the problems left (empty when they agree).
    """
    headers = {"authorization": f"Bearer {token}"} if token else None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    stats: gateway_pb2.GetBookingStatsResponse | None = None
    while True:
        try:
            response = await http.get("/v1/stats", params={"since": since}, headers=headers)
        except httpx.HTTPError as exc:
            problems = [f"GET /v1/stats failed: {type(exc).__name__}: {exc}"]
        else:
            if response.status_code == 200:
                stats = json_format.ParseDict(
                    response.json(), gateway_pb2.GetBookingStatsResponse(), ignore_unknown_fields=True
                )
                problems = expected.differences(stats)
            else:
                problems = [f"GET /v1/stats answered {response.status_code}: {response.text[:200]}"]
        if not problems or loop.time() >= deadline:
            return stats, problems
        await asyncio.sleep(interval)


def stats_lines(stats: gateway_pb2.GetBookingStatsResponse) -> list[str]:
    """The stats for people."""
    reasons = ", ".join(f"{reason} {count}" for reason, count in sorted(stats.cancellation_reasons.items()))
    amounts = ", ".join(
        f"{currency} {cents / 100:.2f}"
        for currency, cents in sorted(stats.confirmed_amount_cents_by_currency.items())
    )
    return [
        f"  bookings    created {stats.bookings_created}, confirmed {stats.bookings_confirmed},"
        f" cancelled {stats.bookings_cancelled}",
        f"  cancelled   {reasons or '-'}",
        f"  confirmed   {amounts or '-'}",
        f"  settled in  p50 {stats.settle_p50_ms:.0f} ms, p95 {stats.settle_p95_ms:.0f} ms,"
        f" p99 {stats.settle_p99_ms:.0f} ms (created to confirmed or cancelled)",
    ]
