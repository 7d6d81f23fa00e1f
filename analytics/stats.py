"""The statistics of the bookings created in a window, computed by the database.

Every figure is an aggregate over a range of ``created_at_us`` (indexed), and the
percentiles are the rows at their ranks in one sort of the window's settled bookings
(``ROW_NUMBER() OVER (ORDER BY settled - created)``, the rows at the wanted ranks only):
the database does the work, and the service's memory does not grow with the history,
however long the window. (A sort per percentile, ``LIMIT 1 OFFSET k``, took 1.6 times as
long: 200,000 bookings on SQLite, 1.05 s against 0.65 s for the whole reply.)

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
        settle_ms=await _settle_ms(conn, window, {p: nearest_rank(p, settled) for p in PERCENTILES}),
    )


async def _settle_ms(
    conn: AsyncConnection, window: ColumnElement[bool], ranks: dict[int, int]
) -> dict[int, float]:
    """The time from created to settled at each rank (1-based) among the window's settled bookings.

    One sort for all the ranks: the settled bookings are numbered in order of that time,
    and only the rows at the wanted ranks come back.
    """
    wanted = {r for r in ranks.values() if r >= 1}
    if not wanted:
        return {p: 0.0 for p in ranks}
    numbered = (
        select(_SETTLE_US, func.row_number().over(order_by=_SETTLE_US).label("rank"))
        .where(window, _t.c.settled_at_us.is_not(None))
        .subquery()
    )
    rows = await conn.execute(
        select(numbered.c.rank, numbered.c.settle_us).where(numbered.c.rank.in_(wanted))
    )
    at = {int(rank): int(us) / 1000 for rank, us in rows}
    return {p: at.get(r, 0.0) for p, r in ranks.items()}
