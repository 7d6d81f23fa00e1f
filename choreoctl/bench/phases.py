"""One measured phase: load the system, sample its processes, split latency into stages.

A phase applies one load (``choreoctl.bench.driver``) through one client
(``choreoctl.bench.load``) and reports, besides the load figures, the CPU and
memory of every process of the system and of the benchmark client itself, how
busy the whole machine was (so load from other programs shows), and
optionally the stage breakdown of ``choreoctl.bench.stages``.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from choreoctl.bench import service_stages
from choreoctl.bench.driver import LoadSpec, run_load
from choreoctl.bench.load import Trip
from choreoctl.bench.procstats import (
    ProcSample,
    machine_cores_used,
    process_costs,
    read_busy_cpu_s,
    sample_all,
)
from choreoctl.bench.profile import Profiler, find_py_spy
from choreoctl.bench.stages import analyze

#: The name the benchmark's own process has in reports.
CLIENT = "bench-client"


class BookingClient(Protocol):
    """What a phase needs of a client (``GrpcBookingClient``, ``HttpBookingClient``)."""

    trips: list[Trip]

    async def book(self) -> str: ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class Target:
    """The system under test.

    Attributes:
        grpc: ``host:port`` of the gateway's gRPC API.
        http: Base URL of its HTTP API.
        nats_url: Its NATS server (for the ceiling and the stage analysis).
        pids: Its processes by name (empty if unknown: no CPU figures then).
        metrics: Each service's ``/metrics`` URL (empty if unknown: no service stages then).
    """

    grpc: str
    http: str
    nats_url: str
    pids: Mapping[str, int] = field(default_factory=dict)
    metrics: Mapping[str, str] = field(default_factory=dict)


@dataclass
class _Window:
    """Samples taken when the measurement window opens and closes."""

    pids: Mapping[str, int]
    before: dict[str, ProcSample] = field(default_factory=dict)
    after: dict[str, ProcSample] = field(default_factory=dict)
    busy: list[float] = field(default_factory=list)
    wall: list[float] = field(default_factory=list)

    def mark(self) -> None:
        samples = sample_all(self.pids)
        if not self.wall:
            self.before = samples
        else:
            self.after = samples
        self.busy.append(read_busy_cpu_s())
        self.wall.append(time.time())


async def measure(
    target: Target,
    make_client: Callable[[], BookingClient],
    spec: LoadSpec,
    *,
    stages: bool = False,
    profile_dir: Path | None = None,
) -> dict[str, Any]:
    """Runs one phase and returns its figures.

    Args:
        target: The system.
        make_client: Builds a fresh client (its trips are this phase's only).
        spec: The load.
        stages: Also split the latency of a sample of bookings into stages.
        profile_dir: Also sample every Python process with py-spy during the
            window, writing the stacks here (``choreoctl.bench.profile``).

    Returns:
        ``choreoctl.bench.driver.LoadResult.to_dict`` plus ``processes`` (CPU and
        memory per process, the client included), ``system_cpu_ms_per_item``
        (CPU of every system process per booking) and ``cpu_bound_per_s`` (the
        rate at which that CPU would fill every core), ``machine_cores_busy`` and
        ``other_cores_busy`` (load from programs outside the system), and
        ``stages`` and ``profile`` when asked.
    """
    pids = {**target.pids, CLIENT: os.getpid()}
    window = _Window(pids)
    profiler = _profiler(profile_dir, pids)
    scrapes: list[asyncio.Future[service_stages.Totals]] = []

    def mark() -> None:
        window.mark()
        if target.metrics:
            scrapes.append(asyncio.ensure_future(service_stages.scrape(target.metrics)))

    def on_start() -> None:
        mark()
        if profiler is not None:
            profiler.start(spec.duration)

    client = make_client()
    try:
        result = await run_load(client.book, spec, on_window_start=on_start, on_window_end=mark)
    finally:
        await client.close()
    figures = result.to_dict()
    if len(scrapes) == 2:
        before, after = await asyncio.gather(*scrapes)
        figures["service_stages"] = service_stages.window(before, after, result.in_window)
    if profile_dir is not None:
        figures["profile"] = await profiler.finish() if profiler else {"error": "py-spy is not installed"}
    costs = process_costs(window.before, window.after, result.in_window, spec.duration)
    figures["processes"] = costs
    system = [c["cpu_ms_per_item"] for name, c in costs.items() if name != CLIENT and c["cpu_ms_per_item"]]
    if system:
        # What one booking costs the whole system, and the rate at which that would fill every core.
        total = sum(system)
        figures["system_cpu_ms_per_item"] = round(total, 3)
        figures["cpu_bound_per_s"] = round((os.cpu_count() or 1) * 1000.0 / total, 1)
    if len(window.busy) == 2:
        machine = machine_cores_used(window.busy[0], window.busy[1], spec.duration)
        ours = sum(c["cores"] or 0.0 for c in costs.values())
        figures["machine_cores_busy"] = round(machine, 3)
        figures["other_cores_busy"] = round(max(0.0, machine - ours), 3)
    if stages and len(window.wall) == 2:
        figures["stages"] = await analyze(target.nats_url, client.trips, (window.wall[0], window.wall[1]))
    return figures


def _profiler(profile_dir: Path | None, pids: Mapping[str, int]) -> Profiler | None:
    py_spy = find_py_spy()
    if profile_dir is None or py_spy is None:
        return None
    # py-spy reads Python stacks; nats-server is a Go program.
    return Profiler(py_spy, profile_dir, {n: p for n, p in pids.items() if n != "nats-server"})
