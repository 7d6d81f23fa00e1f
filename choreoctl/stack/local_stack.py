"""``choreo up``: the whole system on one machine, as separate processes.

Starts a JetStream ``nats-server`` (unless ``--nats-url`` names one), an SMTP
sink keeping every email in ``DIR/mail`` (unless ``NOTIFICATION_SMTP_HOST`` names
a server, ``choreoctl.stack.mailroute``), then the booking, payment, notification,
analytics, inventory and gateway services with ``python -m <service>``, configured through
their environment variables exactly as a deployment would configure them
(``choreoctl.stack.services``). It waits until each one is ready, prints the endpoints, restarts a service
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
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from pathlib import Path

from choreo import dbready
from choreoctl.cli import Subcommand
from choreoctl.stack.console import Console, print_endpoints
from choreoctl.stack.devsecrets import SecretFileError
from choreoctl.stack.dirlock import DirectoryInUseError, DirectoryLock
from choreoctl.stack.logtail import LogTail
from choreoctl.stack.mailroute import HOST_VARIABLE, MailRoute, exported_server, sink_route
from choreoctl.stack.mailsink import MAIL_DIR, MailSink
from choreoctl.stack.natsserver import NatsServer, NatsServerError
from choreoctl.stack.ports import PortUnavailableError, resolve_port
from choreoctl.stack.services import (
    HEALTH_PORTS,
    LOCALHOST,
    SERVICES,
    Endpoints,
    Ports,
    endpoints_for,
    process_specs,
    service_environments,
)
from choreoctl.stack.supervisor import RestartPolicy, Supervisor, describe_exit
from choreoctl.stack.upaccess import open_access

#: In the data directory; held by the ``choreo up`` using it.
DATA_DIR_LOCK = "choreo-up.lock"


def resolve_ports(args: argparse.Namespace, console: Console) -> Ports:
    """The requested ports, or free ones where a default port is taken (said on the console)."""

    chosen: list[int] = []

    def pick(label: str, requested: int | None, default: int) -> int:
        port, note = resolve_port(requested, default, LOCALHOST, exclude=chosen)
        if note:
            console.event("choreo", f"{label}: {note}")
        chosen.append(port)
        return port

    grpc = pick("gRPC port", args.grpc_port, 50051)
    http = pick("HTTP port", args.http_port, 8080)
    health = {
        name: pick(f"{name} health port", getattr(args, health_port_option(name)), default)
        for name, default in HEALTH_PORTS.items()
    }
    return Ports(grpc=grpc, http=http, health=health)


def health_port_option(service: str) -> str:
    """The ``argparse`` destination of ``--<service>-health-port``."""
    return f"{service}_health_port"


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
    # Closed in reverse: nats-server, then the SMTP sink (after the services, below).
    async with contextlib.AsyncExitStack() as resources:
        mail = await open_mail(os.environ, data_dir, console, resources)
        access = await open_access(args.nats_url, args.auth, data_dir, SERVICES, LOCALHOST, console)
        nats = access.nats
        if nats is not None:
            resources.push_async_callback(_stop_nats, nats, console)
        envs = service_environments(
            os.environ,
            access.nats_url,
            ports,
            data_dir,
            args.payment_latency_ms,
            settings=access.settings,
            mail=mail,
        )
        endpoints = replace(
            endpoints_for(access.nats_url, ports, data_dir, nats.log_file if nats else None),
            operator_url=access.operator_url,
            gateway_auth=envs["gateway"]["GATEWAY_AUTH"],
            tokens=access.tokens,
            mail=mail,
            inventory_env=envs.get("inventory"),
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
            console.event("choreo", "stopping services")
            # Services warn that NATS disconnected as they drain; only errors matter now.
            tail.min_level = max(tail.min_level, logging.ERROR)
            codes = await supervisor.stop()
            tail_task.cancel()
            await asyncio.gather(tail_task, return_exceptions=True)
            for name, code in codes.items():
                console.event(name, "stopped" if code is None else f"stopped ({describe_exit(code)})")
    unclean = [name for name, code in codes.items() if code not in (None, 0, -signal.SIGTERM)]
    if unclean:
        console.event("choreo", f"did not stop cleanly: {', '.join(unclean)} (see their logs)")
        return result or 1
    return result


async def _stop_nats(nats: NatsServer, console: Console) -> None:
    await asyncio.to_thread(nats.stop)
    console.event("nats", "stopped")


async def open_mail(
    environ: Mapping[str, str], data_dir: Path, console: Console, resources: contextlib.AsyncExitStack
) -> MailRoute:
    """The exported SMTP server, or the sink started here (stopped when ``resources`` closes)."""
    route = exported_server(environ)
    if route is None:
        sink = MailSink(data_dir / MAIL_DIR, LOCALHOST)
        await sink.start()
        resources.push_async_callback(_stop_sink, sink, console)
        route = sink_route(environ, sink.store.directory, sink.host, sink.port)
        if route.dropped:
            console.event("mail", f"{HOST_VARIABLE} is not set: ignoring {', '.join(route.dropped)}")
    console.event("mail", route.describe())
    return route


async def _stop_sink(sink: MailSink, console: Console) -> None:
    await sink.stop()
    console.event("mail", f"SMTP sink stopped ({sink.received} emails received)")


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
    for name, port in HEALTH_PORTS.items():
        parser.add_argument(
            f"--{name}-health-port",
            type=int,
            dest=health_port_option(name),
            help=f"{name} /readyz port (default {port}, or a free one)",
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
