"""Ordering a workflow's facts by cause: a fact always comes after the fact that caused it.

Clocks of different services disagree, and facts of one workflow sit on
different streams, so time alone cannot order them. The order is topological
on ``causation_id`` (a fact whose cause is not in the trace, like the first
fact, which was caused by a command, is a root); among facts that are ready at
the same time, the earlier (time, stream, sequence) comes first.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Sequence

from gateway.readmodel.model import TraceRecord


def _key(event: TraceRecord) -> tuple[int, str, int, str]:
    return (event.occurred_at_us, event.stream, event.stream_sequence, event.event_id)


def causal_order(events: Sequence[TraceRecord]) -> list[TraceRecord]:
    """Returns ``events`` in causal order (see the module docstring).

    A causation cycle cannot come from real facts; if headers were forged into
    one, the facts in it are appended in time order rather than dropped.
    """
    ids = {e.event_id for e in events}
    children: dict[str, list[TraceRecord]] = defaultdict(list)
    ready: list[tuple[tuple[int, str, int, str], TraceRecord]] = []
    for event in events:
        cause = event.causation_id
        if cause and cause in ids and cause != event.event_id:
            children[cause].append(event)
        else:
            ready.append((_key(event), event))
    heapq.heapify(ready)
    ordered: list[TraceRecord] = []
    placed: set[str] = set()
    while ready:
        _, event = heapq.heappop(ready)
        ordered.append(event)
        placed.add(event.event_id)
        for child in children.pop(event.event_id, ()):
            heapq.heappush(ready, (_key(child), child))
    if len(ordered) < len(events):
        rest = [e for e in events if e.event_id not in placed]
        ordered.extend(sorted(rest, key=_key))
    return ordered
