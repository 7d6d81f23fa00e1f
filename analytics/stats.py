"""The statistics of the bookings created in a window, computed by the database.

Every figure is one aggregate or one indexed range read: the window is a range of
``created_at_us`` (indexed), and each percentile is one row read at its rank
(``ORDER BY ... LIMIT 1 OFFSET k``), so the service's memory does not grow with the
history, however long the window.

Percentiles are nearest-rank: of ``n`` settled bookings sorted by their time from
created to settled, the ``p``-th percentile is the one at rank ``ceil(p * n / 100)``
(1-based); 0 when none is settled.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import ColumnElement, and_, case, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from analytics.tables import CANCELLED, CONFIRMED, analytics_bookings

_t = analytics_bookings
#: The percentiles reported, in percent.
PERCENTILES = (50, 95, 99)
_SETTLE_US = (_t.c.settled_at_us - _t.c.created_at_us).label("settle_us")


@dataclass(frozen=True)
class Stats:
    """The statistics of one window (see ``BookingStats`` in the contract)."""

    created: int = 0
    confirmed: int = 0
    cancelled: int = 0
    cancellation_reasons: dict[str, int] = field(default_factory=dict)
    confirmed_amount_cents_by_currency: dict[str, int] = field(default_factory=dict)
    #: Created to settled, in milliseconds, by percentile (``PERCENTILES``).
    settle_ms: dict[int, float] = field(default_factory=dict)


def nearest_rank(percentile: int, n: int) -> int:
    """The 1-based rank of the ``percentile``-th percentile of ``n`` sorted values (0 when ``n`` is 0)."""
    return -(-percentile * n // 100)


def in_window(since_us: int | None, until_us: int) -> ColumnElement[bool]:
    """Bookings created in ``[since_us, until_us)``; ``since_us`` None: from the first one."""
    created = _t.c.created_at_us
    if since_us is None:
        return and_(created.is_not(None), created < until_us)
    return and_(created >= since_us, created < until_us)


async def window_stats(conn: AsyncConnection, since_us: int | None, until_us: int) -> Stats:
    """The statistics of the bookings created in ``[since_us, until_us)``."""
    window = in_window(since_us, until_us)
    outcome = _t.c.outcome
    counts = (
        await conn.execute(
            select(
                func.count(),
                func.coalesce(func.sum(case((outcome == CONFIRMED, 1), else_=0)), 0),
                func.coalesce(func.sum(case((outcome == CANCELLED, 1), else_=0)), 0),
                func.count(_t.c.settled_at_us),
            ).where(window)
        )
    ).one()
    created, confirmed, cancelled, settled = (int(v) for v in counts)
    if not created:
        return Stats()
    reasons = await conn.execute(
        select(_t.c.cancellation_reason, func.count())
        .where(window, outcome == CANCELLED)
        .group_by(_t.c.cancellation_reason)
    )
    amounts = await conn.execute(
        select(_t.c.currency, func.sum(_t.c.amount_cents))
        .where(window, outcome == CONFIRMED)
        .group_by(_t.c.currency)
    )
    return Stats(
        created=created,
        confirmed=confirmed,
        cancelled=cancelled,
        cancellation_reasons={str(r): int(n) for r, n in reasons},
        confirmed_amount_cents_by_currency={str(c): int(s) for c, s in amounts},
        settle_ms={p: await _settle_ms(conn, window, nearest_rank(p, settled)) for p in PERCENTILES},
    )


async def _settle_ms(conn: AsyncConnection, window: ColumnElement[bool], rank: int) -> float:
    """The time from created to settled at ``rank`` (1-based) among the window's settled bookings."""
    if rank < 1:
        return 0.0
    query = (
        select(_SETTLE_US)
        .where(window, _t.c.settled_at_us.is_not(None))
        .order_by(_SETTLE_US)
        .limit(1)
        .offset(rank - 1)
    )
    value = (await conn.execute(query)).scalar_one_or_none()
    return 0.0 if value is None else int(value) / 1000
