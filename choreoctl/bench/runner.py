"""The whole benchmark: every phase, in one run, on one machine.

On its own system (the default) the run is:

1. start nats-server and the services as ``choreo up`` does, on fresh data;
2. the raw ceiling on the same nats-server (``choreoctl.bench.ceiling``);
3. end to end through gRPC: closed loop (maximum throughput), open loop at
   ``rate`` (latency under load), open loop at ``low_rate`` (latency when idle),
   each with CPU per process and the stage breakdown; then HTTP, closed loop;
4. scale: store bookings up to each checkpoint (10,000 and ``scale``) and
   measure again, with the memory of every process;
5. replay: delete the gateway's read model, restart it, time until ready;
6. durability: a second, fresh system whose nats-server fsyncs every write
   (``sync_interval: always``): ceiling and closed loop again.

Against a running system (``gateway`` and ``nats_url`` given) only 2 and 3 run:
the benchmark cannot restart someone else's processes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from booking.topology import STREAM as BOOKING
from choreo import natsclient
from choreo.natsidentity import tool_inbox
from choreoctl.bench.ceiling import run_ceiling
from choreoctl.bench.driver import LoadSpec, run_count
from choreoctl.bench.durability import database_settings, jetstream_settings, machine
from choreoctl.bench.grpc_floor import run_grpc_floor
from choreoctl.bench.load import GrpcBookingClient, HttpBookingClient, count_pending, settle
from choreoctl.bench.phases import CLIENT, BookingClient, Target, measure
from choreoctl.bench.procstats import sample_all
from choreoctl.bench.report import evaluate_targets
from choreoctl.bench.stack import SERVICES, BenchStack, find_service_pids
from payment.topology import STREAM as PAYMENT

#: Reports progress, one line at a time.
Progress = Callable[[str], None]


@dataclass(frozen=True)
class BenchOptions:
    """What to run.

    Attributes:
        duration: Seconds of each measurement window.
        warmup: Seconds of load before each window.
        concurrency: Clients of the closed loops (gRPC, HTTP, ceiling).
        rate: Bookings per second of the open loop (latency under load).
        low_rate: Bookings per second of the low-load open loop.
        http: Measure the HTTP API too.
        scale: Bookings stored before the last scale measurement (0: no scale phase).
        scale_first: Bookings stored at the first scale measurement, the base memory is
            compared against (the issue asks for flat memory from 10,000 to 100,000).
        scale_concurrency: Clients storing the history.
        replay: Time a full rebuild of the gateway's read model.
        fsync: Repeat the ceiling and the closed loop with fsync on every JetStream write.
        stages: Split latency into stages.
        gateway: ``host:port`` of a running gateway's gRPC API (with ``nats_url``).
        http_url: Base URL of that gateway's HTTP API.
        nats_url: That system's NATS server.
        data_dir: Where the started systems keep their data, kept afterwards (default: a
            temporary folder, deleted afterwards).
        profile_dir: Run one more gRPC closed loop with py-spy on every process, stacks here.
        keep_data: Keep the temporary folder afterwards.
        grpc_floor: Measure ``grpc.aio`` alone (``choreoctl.bench.grpc_floor``).
    """

    duration: float = 10.0
    warmup: float = 2.0
    concurrency: int = 64
    rate: float = 1000.0
    low_rate: float = 20.0
    http: bool = True
    scale: int = 100_000
    scale_first: int = 10_000
    scale_concurrency: int = 128
    replay: bool = True
    fsync: bool = True
    stages: bool = True
    gateway: str | None = None
    http_url: str | None = None
    nats_url: str | None = None
    data_dir: Path | None = None
    profile_dir: Path | None = None
    keep_data: bool = False
    grpc_floor: bool = True

    def spec(self, mode: str = "closed", rate: float | None = None) -> LoadSpec:
        return LoadSpec(
            "open" if mode == "open" else "closed",
            self.duration,
            self.warmup,
            self.concurrency,
            self.rate if rate is None else rate,
        )


async def run_bench(options: BenchOptions, progress: Progress) -> dict[str, Any]:
    """Runs the benchmark and returns the report (see ``choreoctl.bench.report``)."""
    report: dict[str, Any] = {
        "machine": machine(),
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(options).items()},
    }
    if options.gateway:
        if not options.nats_url:
            raise ValueError("--gateway needs --nats-url (for the ceiling and the stage analysis)")
        target = Target(options.gateway, options.http_url or "", options.nats_url, find_service_pids())
        report["settings"] = {"jetstream": {"sync_interval": "unknown (running system)"}, "databases": {}}
        report.update(await _core_phases(target, options, progress))
        _finish(report)
        return report
    root = options.data_dir or Path(tempfile.mkdtemp(prefix="choreo-bench-"))
    # A folder the user named is never deleted; it must not hold an earlier run's data.
    remove = options.data_dir is None and not options.keep_data
    for sub in ("default", "fsync"):
        if options.data_dir is not None and (root / sub).exists() and any((root / sub).iterdir()):
            raise ValueError(f"{root / sub} already holds data: give an empty or new --data-dir")
    try:
        report.update(await _own_system(root / "default", None, options, progress))
        if options.fsync:
            fsync_options = dataclasses.replace(
                options,
                http=False,
                scale=0,
                replay=False,
                low_rate=0.0,
                rate=0.0,
                profile_dir=None,
                grpc_floor=False,  # nothing to do with JetStream's fsync
            )
            progress("durability: a fresh system with fsync on every JetStream write")
            fsynced = await _own_system(root / "fsync", "always", fsync_options, progress)
            report["durability"] = {"fsync_always": _durability_summary(fsynced)}
    finally:
        if remove:
            shutil.rmtree(root, ignore_errors=True)
    report["machine"]["load_average_after"] = machine().get("load_average")
    _finish(report)
    return report


def _durability_summary(figures: dict[str, Any]) -> dict[str, Any]:
    e2e, ceiling = figures.get("e2e", {}), figures.get("ceiling", {})
    return {
        "settings": figures["settings"],
        "e2e": e2e,
        "ceiling": ceiling,
        "ratio": _ratio(e2e, ceiling),
    }


async def _own_system(
    data_dir: Path, sync_interval: str | None, options: BenchOptions, progress: Progress
) -> dict[str, Any]:
    stack = BenchStack(data_dir, sync_interval=sync_interval)
    progress(f"starting nats-server and {', '.join(SERVICES)} in {data_dir}")
    figures: dict[str, Any] = {}
    try:
        # Inside the try: a start that fails or is cancelled (SIGTERM) still stops what it started.
        endpoints = await stack.start()
        metrics = {name: url.replace("/readyz", "/metrics") for name, url in endpoints.health.items()}
        target = Target(endpoints.grpc_target, endpoints.http_base, endpoints.nats_url, stack.pids(), metrics)
        urls = {name: f"sqlite+aiosqlite:///{data_dir / f'{name}.db'}" for name in SERVICES}
        figures["settings"] = {
            "jetstream": jetstream_settings(sync_interval),
            "databases": await database_settings(urls),
        }
        figures.update(await _core_phases(target, options, progress))
        stored = sum(
            figures[k]["started"] for k in ("e2e", "e2e_open", "e2e_low_load", "http") if k in figures
        )
        if options.scale > 0:
            figures["scale"] = await _scale(target, stack, options, stored, progress)
        if options.replay:
            figures["replay"] = await _replay(target, stack, progress)
    finally:
        figures["restarts"] = stack.restarts()
        await stack.stop()
    return figures


async def _core_phases(target: Target, options: BenchOptions, progress: Progress) -> dict[str, Any]:
    """Ceiling, then end to end through gRPC (closed, open, low load) and HTTP.

    After each end-to-end phase the benchmark waits until the read side shows
    no PENDING booking (``settled``), so a phase's backlog never slows the next.
    """
    figures: dict[str, Any] = {}
    nats_pid = {k: v for k, v in target.pids.items() if k == "nats-server"}
    progress(f"ceiling: raw nats-py pipeline, {options.concurrency} in flight, {options.duration:g}s")
    figures["ceiling"] = await run_ceiling(target.nats_url, options.spec(), other_pids=nats_pid)
    if options.grpc_floor:
        progress("gRPC floor: grpc.aio alone, an empty GetBooking")
        figures["grpc_floor"] = await run_grpc_floor(calls=int(max(2, options.duration) * 2000))
    if options.low_rate > 0:
        # The latency floor: the same hops at the same low rate, with nothing but NATS.
        progress(f"ceiling at low load: {options.low_rate:g}/s, {options.duration:g}s")
        low = options.spec("open", options.low_rate)
        figures["ceiling_low_load"] = await run_ceiling(target.nats_url, low, other_pids=nats_pid)

    def grpc_client() -> GrpcBookingClient:
        return GrpcBookingClient(target.grpc)

    def http_client() -> HttpBookingClient:
        return HttpBookingClient(target.http, connections=options.concurrency)

    phases: list[tuple[str, str, Callable[[], BookingClient], LoadSpec, dict[str, Any]]] = [
        ("e2e", f"gRPC closed loop: {options.concurrency} clients", grpc_client, options.spec(), {}),
    ]
    if options.rate > 0:
        phases.append(
            ("e2e_open", f"gRPC open loop: {options.rate:g}/s", grpc_client, options.spec("open"), {})
        )
    if options.low_rate > 0:
        spec = options.spec("open", options.low_rate)
        phases.append(("e2e_low_load", f"gRPC low load: {options.low_rate:g}/s", grpc_client, spec, {}))
    if options.http and target.http:
        phases.append(
            ("http", f"HTTP closed loop: {options.concurrency} clients", http_client, options.spec(), {})
        )
    if options.profile_dir is not None:
        extra = {"profile_dir": options.profile_dir}
        phases.append(
            (
                "profile",
                f"gRPC closed loop with py-spy -> {options.profile_dir}",
                grpc_client,
                options.spec(),
                extra,
            )
        )
    for key, title, client, spec, extra in phases:
        progress(f"e2e {title}, {options.duration:g}s")
        stages = options.stages and key.startswith("e2e")
        figures[key] = await measure(target, client, spec, stages=stages, **extra)
        figures[key]["settled"] = await settle(target.grpc)
    figures["pending_in_read_model"] = await count_pending(target.grpc)
    return figures


async def _scale(
    target: Target, stack: BenchStack, options: BenchOptions, stored: int, progress: Progress
) -> dict[str, Any]:
    """Closed-loop figures and memory at each stored-history checkpoint."""
    checkpoints = sorted({min(options.scale_first, options.scale), options.scale})
    levels: list[dict[str, Any]] = []
    for checkpoint in checkpoints:
        missing = checkpoint - stored
        if missing > 0:
            progress(f"scale: storing {missing:,} more bookings (to {checkpoint:,})")
            client = GrpcBookingClient(target.grpc, record_trips=False)
            try:
                filled = await run_count(client.book, missing, options.scale_concurrency)
            finally:
                await client.close()
            stored += filled.started
            fill = {k: v for k, v in filled.to_dict().items() if k not in ("mode", "concurrency", "window_s")}
            fill["seconds"] = round(filled.window_s, 1)
            fill["settled"] = await settle(target.grpc)
        else:
            fill = {}
        progress(f"scale: measuring with {stored:,} bookings stored")
        figures = await measure(target, lambda: GrpcBookingClient(target.grpc), options.spec())
        figures["settled"] = await settle(target.grpc)
        levels.append({"stored": stored, "fill": fill, **figures})
    return {"levels": levels, "memory": _memory_growth(levels)}


def _memory_growth(levels: list[dict[str, Any]]) -> dict[str, Any]:
    """RSS of each process at the first and the last checkpoint, and the change."""
    if len(levels) < 2:
        return {}
    first, last = levels[0]["processes"], levels[-1]["processes"]
    growth = {}
    # The benchmark's own process is not part of the system.
    for name in (first.keys() & last.keys()) - {CLIENT}:
        before, after = first[name]["rss_mb"], last[name]["rss_mb"]
        growth[name] = {
            "rss_mb_first": before,
            "rss_mb_last": after,
            "change": round((after - before) / before, 3) if before else None,
        }
    return {"from_stored": levels[0]["stored"], "to_stored": levels[-1]["stored"], "processes": growth}


async def _replay(target: Target, stack: BenchStack, progress: Progress) -> dict[str, Any]:
    """Seconds for a new gateway with an empty read model to replay every stream and be ready."""
    events = await _stream_messages(target.nats_url, (BOOKING.name, PAYMENT.name))
    progress(f"replay: rebuilding the gateway's read model from {events:,} events")
    seconds = await stack.rebuild_gateway()
    memory = sample_all({"gateway": stack.pids()["gateway"]}).get("gateway")
    return {
        "events": events,
        "seconds": round(seconds, 3),
        "events_per_s": round(events / seconds, 1) if seconds > 0 else None,
        "gateway_peak_rss_mb": round(memory.hwm_kb / 1024, 1) if memory else None,
        "pending_in_read_model": await count_pending(target.grpc),
    }


async def _stream_messages(nats_url: str, streams: tuple[str, ...]) -> int:
    nc = await natsclient.connect(nats_url, name="bench-replay", inbox_prefix=tool_inbox(nats_url, "bench"))
    try:
        js = nc.jetstream()
        total = 0
        for stream in streams:
            with contextlib.suppress(Exception):
                total += (await js.stream_info(stream)).state.messages
        return total
    finally:
        await nc.close()


def _ratio(e2e: dict[str, Any], ceiling: dict[str, Any]) -> float | None:
    top = ceiling.get("throughput_per_s") or 0.0
    return round(e2e.get("throughput_per_s", 0.0) / top, 3) if top else None


def _finish(report: dict[str, Any]) -> None:
    report["ratio"] = _ratio(report.get("e2e", {}), report.get("ceiling", {}))
    report["targets"] = evaluate_targets(report)
