"""The services' own account of a window: their stage timings (``choreo.metrics``).

Timestamps on the facts (``choreoctl.bench.stages``) show how long a booking spent
between services, not what a service did meanwhile. Each service adds the time
of its stages (consumer lag, handler, transaction, commit, outbox lag, ...) to
a summary on ``GET /metrics``; the difference between a scrape as the window
opens and one as it closes is what the window cost, per booking and per
occurrence.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from choreo.metrics import parse
from choreoctl.bench.http1 import Http1Client

#: Service -> stage -> (seconds, occurrences) so far.
Totals = dict[str, dict[str, tuple[float, int]]]


async def scrape(urls: Mapping[str, str], timeout: float = 5.0) -> Totals:
    """Reads every service's ``/metrics`` (a service that does not answer is left out)."""

    async def one(url: str) -> Totals:
        parts = urlsplit(url)
        client = Http1Client(f"{parts.scheme}://{parts.netloc}", connections=1, timeout=timeout)
        try:
            response = await client.get(parts.path or "/metrics")
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            return {}
        finally:
            await client.close()
        return parse(response.body.decode()) if response.status == 200 else {}

    totals: Totals = {}
    for found in await asyncio.gather(*(one(url) for url in urls.values())):
        totals.update(found)
    return totals


def window(before: Totals, after: Totals, items: int) -> dict[str, dict[str, dict[str, Any]]]:
    """What each stage cost between two scrapes.

    Returns:
        Service -> stage -> ``count`` (occurrences in the window), ``mean_ms``
        (per occurrence) and ``ms_per_item`` (per completed booking).
    """
    result: dict[str, dict[str, dict[str, Any]]] = {}
    for service, stages in after.items():
        for stage, (seconds, count) in stages.items():
            seconds0, count0 = before.get(service, {}).get(stage, (0.0, 0))
            spent, occurrences = seconds - seconds0, count - count0
            if occurrences <= 0:
                continue
            result.setdefault(service, {})[stage] = {
                "count": occurrences,
                "mean_ms": round(spent * 1000.0 / occurrences, 3),
                "ms_per_item": round(spent * 1000.0 / items, 3) if items else None,
            }
    return result
