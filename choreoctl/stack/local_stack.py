"""``choreo up``: the whole system on one machine, as separate processes.

Starts a JetStream ``nats-server`` (unless ``--nats-url`` names one), then the
booking, payment and gateway services with ``python -m <service>``, configured
through their environment variables exactly as a deployment would configure
them. It waits until each one is ready, prints the endpoints, restarts a service
that dies, and on Ctrl-C or SIGTERM stops the services gracefully and then
nats-server. A data directory serves one ``choreo up`` at a time (an OS lock
held while it runs, ``choreoctl.stack.dirlock``). ``--demo`` drives a few bookings through the gateway once
everything is ready (``choreoctl.demo``), then stops.

The nats-server it starts has a user per service with the Kubernetes
permissions, and an operator (``choreoctl.stack.natsusers``); the gateway authenticates
no one unless ``--auth`` (``choreoctl.stack.devauth``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from choreo import dbready
from choreo.sealing import load_or_create_keypair
from choreoctl.cli import Subcommand
from choreoctl.stack.console import Console, print_endpoints
from choreoctl.stack.devsecrets import SecretFileError
from choreoctl.stack.dirlock import DirectoryInUseError, DirectoryLock
from choreoctl.stack.logtail import LogTail
from choreoctl.stack.natsserver import NatsServerError
from choreoctl.stack.ports import PortUnavailableError, resolve_port
from choreoctl.stack.supervisor import ProcessSpec, RestartPolicy, Supervisor, describe_exit
from choreoctl.stack.upaccess import open_access

LOCALHOST = "127.0.0.1"
#: In the data directory; held by the ``choreo up`` using it.
DATA_DIR_LOCK = "choreo-up.lock"

#: The services, in start order (they do not depend on each other to start).
SERVICES = ("booking", "payment", "gateway")


@dataclass(frozen=True)
class Ports:
    """The local ports of the services."""

    grpc: int
    http: int
    booking_health: int
    payment_health: int


@dataclass(frozen=True)
class Endpoints:
    """Where the running system answers.

    Attributes:
        nats_url: The NATS server the services use.
        grpc_target: ``host:port`` of the gateway's gRPC API.
        http_base: Base URL of the gateway's HTTP API.
        health: Readiness URL of each service.
        data_dir: Databases, JetStream store and logs.
        logs: Log file of each service (and of nats-server, when started here).
        operator_url: NATS URL with the operator's credentials (when nats-server is ours).
        gateway_auth: The gateway's ``GATEWAY_AUTH``.
        tokens: Bearer tokens for the gateway by what they are for (``user``, ``admin``),
            when it verifies them.
    """

    nats_url: str
    grpc_target: str
    http_base: str
    health: Mapping[str, str]
    data_dir: Path
    logs: Mapping[str, Path]
    operator_url: str | None = None
    gateway_auth: str = "none"
    tokens: Mapping[str, str] = field(default_factory=dict)

    @property
    def bearer_token(self) -> str | None:
        """The user token, for clients of the gateway (the demo)."""
        return self.tokens.get("user")


def service_environments(
    base: Mapping[str, str],
    nats_url: str,
    ports: Ports,
    data_dir: Path,
    payment_latency_ms: int | None,
    *,
    settings: Mapping[str, Mapping[str, str]] | None = None,
) -> dict[str, dict[str, str]]:
    """The environment of each service process.

    What ``choreo up`` decides (NATS URL, ports, latency when given, and
    ``settings``: by service, settings without its prefix, such as its NATS
    credentials) overrides the inherited environment; the rest are defaults
    that an exported variable replaces, e.g.
    ``BOOKING_DATABASE_URL=postgresql+asyncpg://...`` to run the booking service
    on PostgreSQL.
    """
    defaults: dict[str, dict[str, str]] = {
        name: {
            "DATABASE_URL": f"sqlite+aiosqlite:///{data_dir / f'{name}.db'}",
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "INFO",
        }
        for name in SERVICES
    }
    # Booking's and payment's health endpoints; the gateway answers probes on its HTTP port.
    defaults["booking"]["HEALTH_HOST"] = defaults["payment"]["HEALTH_HOST"] = LOCALHOST
    # Locally the gateway listens on loopback only; export GATEWAY_HOST=0.0.0.0 to expose it.
    defaults["gateway"]["HOST"] = LOCALHOST
    # Anyone reaching the gateway may act as any user, unless `choreo up --auth`.
    defaults["gateway"]["AUTH"] = "none"
    defaults["payment"]["PROVIDER_LEDGER_URL"] = f"sqlite+aiosqlite:///{data_dir / 'psp-ledger.db'}"
    # Payment tokens are sealed to payment's key (choreo.sealing): one pair per data directory.
    private_key, public_key = load_or_create_keypair(data_dir / "payment-token.key")
    defaults["payment"]["TOKEN_PRIVATE_KEY"] = private_key
    defaults["booking"]["PAYMENT_TOKEN_PUBLIC_KEY"] = public_key
    forced: dict[str, dict[str, str]] = {name: {"NATS_URL": nats_url} for name in SERVICES}
    forced["booking"]["HEALTH_PORT"] = str(ports.booking_health)
    forced["payment"]["HEALTH_PORT"] = str(ports.payment_health)
    forced["gateway"].update(GRPC_PORT=str(ports.grpc), HTTP_PORT=str(ports.http))
    if payment_latency_ms is not None:
        forced["payment"]["PROVIDER_LATENCY_MS"] = str(payment_latency_ms)
    for name, values in (settings or {}).items():
        forced[name].update(values)
    envs = {}
    for name in SERVICES:
        prefix = f"{name.upper()}_"
        env = dict(base)
        for key, value in defaults[name].items():
            env.setdefault(prefix + key, value)
        env.update({prefix + key: value for key, value in forced[name].items()})
        # Log lines reach the file as they are written, not when a buffer fills.
        env["PYTHONUNBUFFERED"] = "1"
        envs[name] = env
    return envs


def endpoints_for(nats_url: str, ports: Ports, data_dir: Path, nats_log: Path | None) -> Endpoints:
    logs = {name: data_dir / "logs" / f"{name}.log" for name in SERVICES}
    if nats_log is not None:
        logs["nats"] = nats_log
    return Endpoints(
        nats_url=nats_url,
        grpc_target=f"{LOCALHOST}:{ports.grpc}",
        http_base=f"http://{LOCALHOST}:{ports.http}",
        health={
            "booking": f"http://{LOCALHOST}:{ports.booking_health}/readyz",
            "payment": f"http://{LOCALHOST}:{ports.payment_health}/readyz",
            "gateway": f"http://{LOCALHOST}:{ports.http}/readyz",
        },
        data_dir=data_dir,
        logs=logs,
    )


def process_specs(endpoints: Endpoints, envs: Mapping[str, Mapping[str, str]]) -> list[ProcessSpec]:
    return [
        ProcessSpec(
            name=name,
            argv=[sys.executable, "-m", name],
            env=envs[name],
            log_file=endpoints.logs[name],
            ready_url=endpoints.health[name],
        )
        for name in SERVICES
    ]


def resolve_ports(args: argparse.Namespace, console: Console) -> Ports:
    """The requested ports, or free ones where a default port is taken (said on the console)."""

    chosen: list[int] = []

    def pick(label: str, requested: int | None, default: int) -> int:
        port, note = resolve_port(requested, default, LOCALHOST, exclude=chosen)
        if note:
            console.event("choreo", f"{label}: {note}")
        chosen.append(port)
        return port

    return Ports(
        grpc=pick("gRPC port", args.grpc_port, 50051),
        http=pick("HTTP port", args.http_port, 8080),
        booking_health=pick("booking health port", args.booking_health_port, 8081),
        payment_health=pick("payment health port", args.payment_health_port, 8082),
    )


def _log_tail(path: Path, lines: int = 15) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()[-lines:]
    except FileNotFoundError:
        return []


async def create_databases(environ: Mapping[str, str], console: Console) -> bool:
    """Creates the PostgreSQL databases the exported ``<SERVICE>_..._URL`` variables name.

    Returns:
        False when one does not exist and cannot be created (the console says how).
    """
    prefixes = tuple(f"{name.upper()}_" for name in SERVICES)
    for variable, url in dbready.postgres_urls(environ, prefixes).items():
        try:
            done = await dbready.create_missing(variable, url)
        except dbready.DatabaseUnusable as exc:
            console.event("choreo", str(exc))
            return False
        if done is not None:
            console.event("choreo", done)
    return True


AfterReady = Callable[[Endpoints, Console], Awaitable[int]]


async def run_stack(
    args: argparse.Namespace, data_dir: Path, console: Console, after_ready: AfterReady | None
) -> int:
    """Runs the system until a signal (or until ``after_ready`` returns); returns the exit code.

    Args:
        args: The parsed ``choreo up`` options.
        data_dir: Existing absolute directory for databases, JetStream store and logs.
        console: Where the human-readable account goes.
        after_ready: Runs once everything is ready (the demo); its result is the exit code.
    """
    ports = resolve_ports(args, console)
    stop = asyncio.Event()
    supervisor: Supervisor | None = None

    def on_signal() -> None:
        # A second Ctrl-C means "now": no more waiting for graceful shutdowns.
        if stop.is_set() and supervisor is not None:
            console.event("choreo", "second interrupt: killing the services")
            supervisor.kill_now()
        stop.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    if not await create_databases(os.environ, console):
        return 2
    access = await open_access(args.nats_url, args.auth, data_dir, SERVICES, LOCALHOST, console)
    nats = access.nats
    envs = service_environments(
        os.environ, access.nats_url, ports, data_dir, args.payment_latency_ms, settings=access.settings
    )
    endpoints = replace(
        endpoints_for(access.nats_url, ports, data_dir, nats.log_file if nats else None),
        operator_url=access.operator_url,
        gateway_auth=envs["gateway"]["GATEWAY_AUTH"],
        tokens=access.tokens,
    )
    tail = LogTail(
        {name: endpoints.logs[name] for name in SERVICES},
        console.event,
        logging.INFO if args.verbose else logging.WARNING,
    )
    tail.skip_existing()

    def report(name: str, message: str) -> None:
        tail.poll()  # what the service logged before this event is shown before it
        console.event(name, message)

    policy = RestartPolicy(stop_grace=args.stop_grace)
    supervisor = Supervisor(process_specs(endpoints, envs), policy, report)
    tail_task = asyncio.create_task(tail.run())
    # An interrupted demo did not show what it should: that is not a success.
    interrupted = 130 if after_ready is not None else 0
    result = 0
    try:
        supervisor.start()
        ready_then = _ready_then(supervisor, endpoints, console, args, after_ready)
        result = await _until_stopped(ready_then, stop, interrupted)
    finally:
        try:
            console.event("choreo", "stopping services")
            # Services warn that NATS disconnected as they drain; only errors matter now.
            tail.min_level = max(tail.min_level, logging.ERROR)
            codes = await supervisor.stop()
            tail_task.cancel()
            await asyncio.gather(tail_task, return_exceptions=True)
            for name, code in codes.items():
                console.event(name, "stopped" if code is None else f"stopped ({describe_exit(code)})")
        finally:
            if nats is not None:
                await asyncio.to_thread(nats.stop)
                console.event("nats", "stopped")
    unclean = [name for name, code in codes.items() if code not in (None, 0, -signal.SIGTERM)]
    if unclean:
        console.event("choreo", f"did not stop cleanly: {', '.join(unclean)} (see their logs)")
        return result or 1
    return result


async def _until_stopped(work: Awaitable[int], stop: asyncio.Event, interrupted: int) -> int:
    """``work``'s result, or ``interrupted`` when ``stop`` is set first (the work is then cancelled)."""
    task = asyncio.ensure_future(work)
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return interrupted


async def _ready_then(
    supervisor: Supervisor,
    endpoints: Endpoints,
    console: Console,
    args: argparse.Namespace,
    after_ready: AfterReady | None,
) -> int:
    not_ready = await supervisor.wait_ready(args.ready_timeout)
    gave_up = supervisor.gave_up()
    for name in gave_up:
        console.event(name, "fix what it said above, then run choreo up again")
    if not_ready and not gave_up:
        for name in not_ready:
            console.event(
                name, f"not ready after {args.ready_timeout:.0f}s; last lines of {endpoints.logs[name]}:"
            )
            for line in _log_tail(endpoints.logs[name]):
                console.text(f"    {line}")
    if not_ready:
        return 1
    print_endpoints(console, endpoints)
    if after_ready is not None:
        return await after_ready(endpoints, console)
    console.text("Press Ctrl-C to stop.")
    await asyncio.Event().wait()  # until cancelled by a signal
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--demo", action="store_true", help="drive a few bookings, print the outcomes, then stop"
    )
    parser.add_argument(
        "--nats-url", help="use this NATS server instead of starting one (no NATS users are made)"
    )
    parser.add_argument(
        "--auth",
        action="store_true",
        help="the gateway verifies bearer tokens (a dev HS256 secret; tokens are printed)",
    )
    parser.add_argument("--data-dir", default="./var", help="databases, JetStream store and log files")
    parser.add_argument("--grpc-port", type=int, help="gateway gRPC port (default 50051, or a free one)")
    parser.add_argument("--http-port", type=int, help="gateway HTTP port (default 8080, or a free one)")
    parser.add_argument(
        "--booking-health-port", type=int, help="booking /readyz port (default 8081, or a free one)"
    )
    parser.add_argument(
        "--payment-health-port", type=int, help="payment /readyz port (default 8082, or a free one)"
    )
    parser.add_argument(
        "--payment-latency-ms",
        type=int,
        help="simulated payment provider latency (default 0, or PAYMENT_PROVIDER_LATENCY_MS)",
    )
    parser.add_argument("--ready-timeout", type=float, default=60.0, help="seconds to wait for every service")
    parser.add_argument("--stop-grace", type=float, default=15.0, help="seconds between SIGTERM and SIGKILL")
    parser.add_argument("-v", "--verbose", action="store_true", help="show the services' INFO log lines too")


def run(args: argparse.Namespace) -> int:
    console = Console()
    after_ready: AfterReady | None = None
    if args.demo:
        from choreoctl.demo import run_demo

        after_ready = run_demo
    data_dir = Path(args.data_dir).resolve()
    with DirectoryLock(data_dir, DATA_DIR_LOCK) as lock:
        try:
            lock.acquire("choreo up")
        except DirectoryInUseError as exc:
            console.event(
                "choreo",
                f"{exc}: two choreo up on one data directory corrupt its JetStream store;"
                " stop the other one or pass another --data-dir",
            )
            return 2
        try:
            return asyncio.run(run_stack(args, data_dir, console, after_ready))
        except (PortUnavailableError, NatsServerError, SecretFileError) as exc:
            console.event("choreo", str(exc))
            return 2


SUBCOMMAND = Subcommand(
    name="up",
    help="run nats-server and every service locally (add --demo for a guided run)",
    description=__doc__ or "",
    add_arguments=add_arguments,
    run=run,
)
