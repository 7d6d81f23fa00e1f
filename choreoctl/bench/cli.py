"""``choreo bench``: measure the system end to end against the raw NATS ceiling.

Starts nats-server and the services on fresh data (as ``choreo up`` does), or
targets a running system with ``--gateway`` and ``--nats-url``, then prints the
report as tables and, with ``--json``, writes it as JSON. See
docs/benchmarks.md for what each figure means.

SIGTERM or Ctrl-C stops the run: every process the benchmark started
(nats-server, the services, the ceiling workers) is stopped before it exits.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from choreoctl.cli import Subcommand

if TYPE_CHECKING:
    from choreoctl.bench.runner import BenchOptions


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of each measurement window")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of load before each window")
    parser.add_argument("--rate", type=float, default=1000.0, help="bookings/s of the open loop (0: skip)")
    parser.add_argument(
        "--low-rate", type=float, default=20.0, help="bookings/s of the low-load open loop (0: skip)"
    )
    parser.add_argument("--concurrency", type=int, default=64, help="clients of the closed loops")
    parser.add_argument("--json", metavar="FILE", help="also write the report as JSON to FILE")
    parser.add_argument(
        "--scale",
        type=int,
        default=100_000,
        help="bookings stored before the last scale measurement (0: skip)",
    )
    parser.add_argument(
        "--scale-first",
        type=int,
        default=10_000,
        help="bookings stored at the first scale measurement (the memory baseline)",
    )
    parser.add_argument("--no-http", action="store_true", help="skip the HTTP measurement")
    parser.add_argument("--no-replay", action="store_true", help="skip the read-model rebuild")
    parser.add_argument(
        "--no-fsync", action="store_true", help="skip the run with fsync on every JetStream write"
    )
    parser.add_argument("--no-stages", action="store_true", help="skip the stage breakdown")
    parser.add_argument("--gateway", metavar="HOST:PORT", help="gRPC address of a running gateway")
    parser.add_argument("--http", metavar="URL", help="HTTP base URL of that gateway (none: no HTTP run)")
    parser.add_argument("--nats-url", help="NATS server of the running system (needed with --gateway)")
    parser.add_argument(
        "--data-dir",
        help="where the started systems keep their data, kept afterwards (none: a temporary folder)",
    )
    parser.add_argument(
        "--profile", metavar="DIR", help="one more closed loop with py-spy on every process; stacks to DIR"
    )
    parser.add_argument("--keep-data", action="store_true", help="keep the temporary data folder afterwards")


def options_from(args: argparse.Namespace) -> BenchOptions:
    from choreoctl.bench.runner import BenchOptions  # heavy imports only when the command runs

    return BenchOptions(
        duration=args.duration,
        warmup=args.warmup,
        concurrency=args.concurrency,
        rate=args.rate,
        low_rate=args.low_rate,
        http=not args.no_http,
        scale=args.scale,
        scale_first=args.scale_first,
        replay=not args.no_replay,
        fsync=not args.no_fsync,
        stages=not args.no_stages,
        gateway=args.gateway,
        http_url=args.http,
        nats_url=args.nats_url,
        data_dir=Path(args.data_dir).resolve() if args.data_dir else None,
        profile_dir=Path(args.profile).resolve() if args.profile else None,
        keep_data=args.keep_data,
    )


def run(args: argparse.Namespace) -> int:
    """Runs the benchmark; returns 0 when every booking completed, 1 otherwise."""
    from choreoctl.bench.report import format_report
    from choreoctl.bench.runner import run_bench

    if args.gateway and not args.nats_url:
        print("choreo bench: --gateway needs --nats-url", file=sys.stderr)
        return 2
    started = time.monotonic()

    def progress(line: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {line}", file=sys.stderr, flush=True)

    try:
        report = asyncio.run(until_signal(run_bench(options_from(args), progress), progress))
    except Interrupted as exc:
        progress(f"stopped by {exc.signal.name}; every process the benchmark started is stopped")
        return 128 + exc.signal.value
    print(format_report(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        progress(f"JSON report written to {args.json}")
    return 0 if report_clean(report) else 1


class Interrupted(Exception):
    """The run was stopped by a signal (after its clean-up ran)."""

    def __init__(self, sig: signal.Signals) -> None:
        super().__init__(sig.name)
        self.signal = sig


T = TypeVar("T")


async def until_signal(work: Coroutine[Any, Any, T], progress: Callable[[str], None]) -> T:
    """Runs ``work``; SIGTERM or SIGINT cancels it, so its ``finally`` blocks stop what it started.

    Without this, SIGTERM ends the interpreter at once and the services and
    nats-server, each in its own session, keep running. A second signal while
    the clean-up runs is ignored: the services are killed after their grace period anyway.

    Raises:
        Interrupted: A signal stopped the work.
    """
    task = asyncio.ensure_future(work)
    received: list[signal.Signals] = []

    def on_signal(sig: signal.Signals) -> None:
        if received:
            progress(f"{sig.name}: already stopping")
            return
        received.append(sig)
        progress(f"{sig.name}: stopping the processes the benchmark started")
        task.cancel()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        return await task
    except asyncio.CancelledError:
        if received:
            raise Interrupted(received[0]) from None
        raise
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def report_clean(report: dict[str, object]) -> bool:
    """True when no measured run had errors or bookings left pending."""
    runs = [report.get(k) for k in ("e2e", "e2e_open", "e2e_low_load", "http")]
    for figures in runs:
        if isinstance(figures, dict) and (figures.get("errors") or figures.get("pending")):
            return False
    return not report.get("pending_in_read_model")


SUBCOMMAND = Subcommand(
    name="bench",
    help="measure bookings/s and latency end to end against the raw NATS ceiling",
    description=__doc__ or "",
    add_arguments=add_arguments,
    run=run,
)
