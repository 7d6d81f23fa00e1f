"""The system under test, started the way ``choreo up`` starts it.

``BenchStack`` reuses ``choreoctl.stack.services`` (each service's environment,
endpoints and command line) and ``choreoctl.stack.supervisor`` (spawning, readiness
probes, graceful stops), so the benchmark measures the same processes with the
same embedded defaults a user gets. It adds what a benchmark needs: every
process id (to sample CPU and memory), a nats-server configuration file (to
turn on ``sync_interval: always``), and restarting the gateway alone from an
empty read model (to time a full replay).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from choreoctl.stack.natsserver import NatsServer
from choreoctl.stack.ports import free_port
from choreoctl.stack.services import (
    LOCALHOST,
    Endpoints,
    Ports,
    endpoints_for,
    process_specs,
    service_environments,
)
from choreoctl.stack.supervisor import ProcessSpec, RestartPolicy, SupervisedProcess

#: The services a benchmark runs: the booking workflow (notification and analytics only
#: react to it, and an SMTP server's pace is not the system's).
SERVICES = ("booking", "payment", "gateway")


class StackError(RuntimeError):
    """The system did not start."""


def nats_config(sync_interval: str | None) -> str | None:
    """The nats-server configuration for a JetStream ``sync_interval`` (``None``: server default).

    ``always`` makes the server fsync every write before acknowledging it;
    the default flushes to the OS at once and fsyncs every two minutes.
    """
    if sync_interval is None:
        return None
    return f"jetstream {{\n  sync_interval: {sync_interval}\n}}\n"


@dataclass
class BenchStack:
    """nats-server and the three services on free local ports.

    Args:
        data_dir: Databases, JetStream store and logs (should start empty).
        sync_interval: JetStream ``sync_interval`` (``always`` for fsync per write).
        payment_latency_ms: Simulated payment provider latency.
        env: Extra environment for every service (e.g. ``BOOKING_DATABASE_URL``).
    """

    data_dir: Path
    sync_interval: str | None = None
    payment_latency_ms: int = 0
    env: Mapping[str, str] = field(default_factory=dict)
    events: list[str] = field(default_factory=list)
    nats: NatsServer | None = None
    endpoints: Endpoints | None = None
    _specs: dict[str, ProcessSpec] = field(default_factory=dict)
    _processes: dict[str, SupervisedProcess] = field(default_factory=dict)
    _tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    _policy: RestartPolicy = field(default_factory=lambda: RestartPolicy(stop_grace=15.0))

    def _report(self, name: str, message: str) -> None:
        self.events.append(f"{name}: {message}")

    async def start(self, ready_timeout: float = 60.0) -> Endpoints:
        """Starts nats-server and every service; returns when all are ready."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = nats_config(self.sync_interval)
        config_file = None
        if config is not None:
            config_file = self.data_dir / "nats-server.conf"
            config_file.write_text(config)
        self.nats = NatsServer(self.data_dir / "nats", host=LOCALHOST, config_file=config_file)
        await asyncio.to_thread(self.nats.start)
        taken: list[int] = []
        for _ in range(4):
            taken.append(free_port(LOCALHOST, exclude=taken))
        health = {"booking": taken[2], "payment": taken[3]}
        ports = Ports(grpc=taken[0], http=taken[1], health=health)
        self.endpoints = endpoints_for(self.nats.url, ports, self.data_dir, self.nats.log_file, SERVICES)
        base = {**os.environ, **self.env}
        envs = service_environments(
            base, self.nats.url, ports, self.data_dir, self.payment_latency_ms, services=SERVICES
        )
        self._specs = {spec.name: spec for spec in process_specs(self.endpoints, envs)}
        for name in SERVICES:
            self._spawn(name)
        for name in SERVICES:
            await self.wait_ready(name, ready_timeout)
        return self.endpoints

    def _spawn(self, name: str) -> SupervisedProcess:
        process = SupervisedProcess(self._specs[name], self._policy, self._report)
        self._processes[name] = process
        self._tasks[name] = asyncio.create_task(process.run(), name=f"bench-{name}")
        return process

    async def wait_ready(self, name: str, timeout: float) -> None:
        """Waits until ``name`` passes its readiness probe.

        Raises:
            StackError: not ready in time (with the end of its log).
        """
        try:
            await asyncio.wait_for(self._processes[name].ready.wait(), timeout)
        except TimeoutError:
            raise StackError(f"{name} not ready after {timeout:.0f}s:\n{self.log_tail(name)}") from None

    def pids(self) -> dict[str, int]:
        """The current process id of nats-server and of each service."""
        pids: dict[str, int] = {}
        if self.nats is not None and self.nats.process is not None:
            pids["nats-server"] = self.nats.process.pid
        for name, process in self._processes.items():
            if process.pid is not None:
                pids[name] = process.pid
        return pids

    def restarts(self) -> dict[str, int]:
        """How many times each service was restarted after a crash."""
        return {name: max(0, p.starts - 1) for name, p in self._processes.items()}

    async def rebuild_gateway(self, timeout: float = 600.0) -> float:
        """Stops the gateway, deletes its read model, starts it again; returns seconds until ready.

        The new gateway replays every stream from the start before it reports ready.
        """
        await self._stop_one("gateway")
        database = self.data_dir / "gateway.db"
        for suffix in ("", "-wal", "-shm"):
            await asyncio.to_thread(Path(f"{database}{suffix}").unlink, missing_ok=True)
        started = asyncio.get_running_loop().time()
        self._spawn("gateway")
        await self.wait_ready("gateway", timeout)
        return asyncio.get_running_loop().time() - started

    async def _stop_one(self, name: str) -> None:
        self._processes[name].stop()
        await self._tasks.pop(name)

    async def stop(self) -> None:
        """Stops the services (gracefully), then nats-server."""
        for process in self._processes.values():
            process.stop()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._tasks.clear()
        if self.nats is not None:
            await asyncio.to_thread(self.nats.stop)

    def log_tail(self, name: str, chars: int = 3000) -> str:
        if self.endpoints is None:
            return ""
        with contextlib.suppress(FileNotFoundError):
            return self.endpoints.logs[name].read_text(errors="replace")[-chars:]
        return ""


def find_service_pids(proc: Path = Path("/proc")) -> dict[str, int]:
    """Best-effort process ids of a system this machine runs but we did not start.

    Matches ``python -m booking|payment|gateway`` and ``nats-server`` command
    lines; a name matched by more than one process is left out (ambiguous).
    """
    found: dict[str, list[int]] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        words = [a.decode(errors="replace") for a in argv if a]
        if not words:
            continue
        name = None
        if Path(words[0]).name == "nats-server":
            name = "nats-server"
        elif "-m" in words[:-1] and Path(words[0]).name.startswith("python"):
            module = words[words.index("-m") + 1]
            name = module if module in SERVICES else None
        if name is not None:
            found.setdefault(name, []).append(int(entry.name))
    return {name: pids[0] for name, pids in found.items() if len(pids) == 1}
