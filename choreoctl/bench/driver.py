"""Open- and closed-loop load, for any operation that takes one item to its end.

An operation (``Op``) creates one item (a booking, a ceiling pipeline), follows
it until it is terminal, and returns the terminal state's name. It raises
``StillPending`` when the item was created but did not reach a terminal state in
time, and anything else when creating it failed.

* Closed loop: ``concurrency`` clients, each starting its next item as soon as
  the previous one ended. It finds the maximum throughput; latency then only
  says how long the queue was.
* Open loop: items start at a fixed ``rate`` whatever the system does, and
  latency is counted from the *scheduled* start, so a stalled system is charged
  for the requests it delayed (no coordinated omission).

Only items that end inside the measurement window (after a warm-up) count
towards throughput and latency; every item started is followed to its end, so
errors and items left pending are complete counts.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from choreoctl.bench.stats import LatencySummary

#: Creates and follows one item; returns its terminal state.
Op = Callable[[], Awaitable[str]]

#: Called at the start and at the end of the measurement window.
WindowHook = Callable[[], None]

#: Errors kept as examples in the result.
_ERROR_SAMPLES = 5


class StillPending(Exception):
    """The item was created but had not reached a terminal state when we gave up on it."""


@dataclass(frozen=True, slots=True)
class LoadSpec:
    """What load to apply.

    Attributes:
        mode: ``closed`` (fixed concurrency) or ``open`` (fixed rate).
        duration: Seconds of the measurement window.
        warmup: Seconds of load before the window opens.
        concurrency: Clients of a closed loop.
        rate: Items started per second by an open loop.
    """

    mode: Literal["closed", "open"]
    duration: float
    warmup: float = 1.0
    concurrency: int = 16
    rate: float = 100.0


@dataclass
class LoadResult:
    """What happened to every item of one run."""

    spec: LoadSpec
    window_s: float = 0.0
    started: int = 0
    ended: int = 0
    errors: int = 0
    pending: int = 0
    in_window: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    states: Counter[str] = field(default_factory=Counter)
    error_samples: list[str] = field(default_factory=list)

    @property
    def throughput_per_s(self) -> float:
        return self.in_window / self.window_s if self.window_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """The JSON form used in reports."""
        target: dict[str, Any] = (
            {"concurrency": self.spec.concurrency} if self.spec.mode == "closed" else {"rate": self.spec.rate}
        )
        return {
            "mode": self.spec.mode,
            **target,
            "window_s": round(self.window_s, 3),
            "started": self.started,
            "completed": self.ended,
            "completed_in_window": self.in_window,
            "errors": self.errors,
            "pending": self.pending,
            "states": dict(self.states),
            "throughput_per_s": round(self.throughput_per_s, 1),
            "latency_ms": LatencySummary.of(self.latencies_ms).to_dict(),
            "error_samples": self.error_samples,
        }


class _Run:
    """Bookkeeping shared by the clients of one run."""

    def __init__(self, spec: LoadSpec) -> None:
        self.result = LoadResult(spec)
        now = time.perf_counter()
        self.window_start = now + spec.warmup
        self.window_end = self.window_start + spec.duration

    async def one(self, op: Op, started_at: float) -> None:
        """Runs one item; ``started_at`` is when it started (or was scheduled to)."""
        r = self.result
        r.started += 1
        try:
            state = await op()
        except StillPending:
            r.pending += 1
            return
        except Exception as exc:
            r.errors += 1
            if len(r.error_samples) < _ERROR_SAMPLES:
                r.error_samples.append(f"{type(exc).__name__}: {exc}"[:300])
            return
        ended_at = time.perf_counter()
        r.ended += 1
        r.states[state] += 1
        if self.window_start <= ended_at <= self.window_end:
            r.in_window += 1
            r.latencies_ms.append((ended_at - started_at) * 1000.0)


async def run_load(
    op: Op,
    spec: LoadSpec,
    *,
    on_window_start: WindowHook | None = None,
    on_window_end: WindowHook | None = None,
) -> LoadResult:
    """Applies the load, then waits for every started item to end.

    Args:
        op: Creates and follows one item.
        spec: Closed or open loop, duration, warm-up.
        on_window_start: Called when the measurement window opens (e.g. to
            sample the CPU time of processes).
        on_window_end: Called when it closes.
    """
    run = _Run(spec)
    hooks = asyncio.create_task(_window_hooks(run, on_window_start, on_window_end))
    try:
        if spec.mode == "closed":
            await _closed_loop(run, op, spec.concurrency)
        else:
            await _open_loop(run, op, spec.rate)
        await hooks
    finally:
        hooks.cancel()
    run.result.window_s = spec.duration
    return run.result


async def _window_hooks(run: _Run, start: WindowHook | None, end: WindowHook | None) -> None:
    await asyncio.sleep(max(0.0, run.window_start - time.perf_counter()))
    if start is not None:
        start()
    await asyncio.sleep(max(0.0, run.window_end - time.perf_counter()))
    if end is not None:
        end()


async def _closed_loop(run: _Run, op: Op, concurrency: int) -> None:
    async def client() -> None:
        while time.perf_counter() < run.window_end:
            await run.one(op, time.perf_counter())

    await asyncio.gather(*(client() for _ in range(concurrency)))


async def _open_loop(run: _Run, op: Op, rate: float) -> None:
    interval = 1.0 / rate
    first = time.perf_counter()
    tasks: set[asyncio.Task[None]] = set()
    i = 0
    while True:
        scheduled = first + i * interval
        if scheduled >= run.window_end:
            break
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        # Behind schedule, the loop does not sleep and catches up; latency still
        # counts from ``scheduled``, so the backlog shows in the figures.
        task = asyncio.create_task(run.one(op, scheduled))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        i += 1
    if tasks:
        await asyncio.gather(*tasks)


async def run_count(op: Op, count: int, concurrency: int) -> LoadResult:
    """Runs exactly ``count`` items with ``concurrency`` clients (e.g. to store a history).

    The whole run is the window: throughput is ``count`` over the time it took.
    """
    spec = LoadSpec("closed", duration=0.0, warmup=0.0, concurrency=concurrency)
    run = _Run(spec)
    run.window_end = float("inf")
    remaining = count

    async def client() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await run.one(op, time.perf_counter())

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(min(concurrency, count))))
    run.result.window_s = time.perf_counter() - started
    return run.result
