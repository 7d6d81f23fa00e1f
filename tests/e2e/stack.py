"""The whole system as separate processes, for end-to-end and fault tests.

Each service runs as ``python -m <service>`` with its configuration in the
environment, as in a deployment, so the tests can SIGKILL and restart any one.
A worker service may run as several replicas, each its own process: the first
is named after the service (``payment``), the others ``payment-2``, ``payment-3``...

The stack counts every start of every process and remembers which exits it
caused (``kill``, ``terminate``), so a test can tell a process that was killed
on purpose from one that exited (crashed) on its own.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx

from choreoctl.stack.ports import free_port
from tests.support import SERVICES


def service_of(name: str) -> str:
    """The service a process name belongs to: ``payment-2`` -> ``payment``."""
    return name.rsplit("-", 1)[0] if "-" in name else name


#: Services that join by subscribing; a stack runs them when asked (``joining``).
JOINING = ("notification", "analytics", "inventory")


class Stack:
    """booking, payment and gateway processes sharing one nats-server.

    Args:
        root: Folder for databases and logs.
        nats_url: The server the services use.
        database_urls: Per-service database URL (default: SQLite files under ``root``).
        env: Extra environment for every service.
        replicas: Processes per worker service (booking, payment, or a joining one; default 1
            each). Replicas of a service share its database.
        ledger_url: The simulated provider's ledger (default: a SQLite file under ``root``).
        joining: Services of ``JOINING`` to run as well (started before the gateway); each
            needs its own settings in ``env`` where it has required ones.
    """

    def __init__(
        self,
        root: Path,
        nats_url: str,
        database_urls: dict[str, str] | None = None,
        env: dict[str, str] | None = None,
        replicas: dict[str, int] | None = None,
        ledger_url: str | None = None,
        joining: tuple[str, ...] = (),
    ) -> None:
        self.root = root
        self.nats_url = nats_url
        self.grpc_port = free_port()
        self.http_port = free_port()
        workers = ("booking", "payment", *joining)
        counts = dict.fromkeys(workers, 1) | (replicas or {})
        if set(counts) - set(workers) or min(counts.values()) < 1:
            raise ValueError(f"replicas are for {workers}, at least 1 each: {replicas}")
        #: Every process name, in start order.
        self.names: list[str] = [
            *(
                service if i == 1 else f"{service}-{i}"
                for service in workers
                for i in range(1, counts[service] + 1)
            ),
            "gateway",
        ]
        if set(joining) - set(JOINING):
            raise ValueError(f"joining services are among {JOINING}: {joining}")
        self.health_ports = {name: free_port() for name in self.names if name != "gateway"}
        self.database_urls = {
            name: f"sqlite+aiosqlite:///{root / f'{name}.db'}" for name in (*SERVICES, *joining)
        } | (database_urls or {})
        self.ledger_url = ledger_url or f"sqlite+aiosqlite:///{root / 'psp-ledger.db'}"
        self.extra_env = env or {}
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        #: How many times each process was started (a restart makes it 2).
        self.starts: Counter[str] = Counter()
        #: Exits the stack did not cause: (name, return code), found when it next looked.
        self.unexpected_exits: list[tuple[str, int]] = []
        #: Pids whose exit is explained: stopped by the stack, or already in ``unexpected_exits``.
        self._accounted: set[int] = set()

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def environment(self, name: str) -> dict[str, str]:
        service = service_of(name)
        prefix = service.upper() + "_"
        env = {
            **os.environ,
            prefix + "NATS_URL": self.nats_url,
            prefix + "DATABASE_URL": self.database_urls[service],
            prefix + "LOG_FORMAT": "json",
            prefix + "SHUTDOWN_GRACE_SECONDS": "5",
        }
        if service == "gateway":
            env |= {prefix + "GRPC_PORT": str(self.grpc_port), prefix + "HTTP_PORT": str(self.http_port)}
            env |= {prefix + "HOST": "127.0.0.1"}
        else:  # the event consumers (choreo.settings.ConsumerSettings)
            env |= {prefix + "HEALTH_PORT": str(self.health_ports[name]), prefix + "HEALTH_HOST": "127.0.0.1"}
            env |= {prefix + "RETRY_BACKOFF_SECONDS": "0.1", prefix + "ACK_WAIT_SECONDS": "5"}
        if service == "payment":
            env[prefix + "PROVIDER_LEDGER_URL"] = self.ledger_url
        return env | self.extra_env

    def ready_url(self, name: str) -> str:
        if name == "gateway":
            return f"{self.http_base}/readyz"
        return f"http://127.0.0.1:{self.health_ports[name]}/readyz"

    def start(self, *names: str, timeout: float = 30.0) -> None:
        """Starts the processes (all by default) and waits until each is ready."""
        for name in names or self.names:
            if name not in self.names:
                raise KeyError(f"no process {name!r} in this stack: {self.names}")
            self._note_exit(name)
            log = (self.root / f"{name}.log").open("ab")
            self.processes[name] = subprocess.Popen(
                [sys.executable, "-m", service_of(name)],
                env=self.environment(name),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            self.starts[name] += 1
        for name in names or self.names:
            self.wait_ready(name, timeout)

    def wait_ready(self, name: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = self.processes[name]
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{self.log_tail(name)}")
            try:
                if httpx.get(self.ready_url(name), timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"{name} not ready in {timeout}s:\n{self.log_tail(name)}")

    def kill(self, name: str) -> None:
        """SIGKILL: no shutdown hooks, like a crash or an OOM kill."""
        self._note_exit(name)
        proc = self.processes[name]
        if proc.poll() is None:
            self._accounted.add(proc.pid)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def terminate(self, name: str, timeout: float = 15.0) -> int:
        """SIGTERM and wait: the graceful path; returns the exit code."""
        self._note_exit(name)
        proc = self.processes[name]
        if proc.poll() is None:
            self._accounted.add(proc.pid)
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill(name)
        return int(proc.returncode)

    def stop(self, timeout: float = 15.0) -> dict[str, int]:
        """Terminates every process at once (one SIGTERM each, then waits); returns their exit codes.

        A process still running after ``timeout`` is killed (its code is then -9).
        """
        names = list(reversed(list(self.processes)))
        for name in names:
            self._note_exit(name)
            proc = self.processes[name]
            if proc.poll() is None:
                self._accounted.add(proc.pid)
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for name in names:
            try:
                self.processes[name].wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.kill(name)
        return {name: int(self.processes[name].returncode) for name in names}

    def exited_on_their_own(self) -> list[tuple[str, int]]:
        """Processes that exited without the stack stopping them, so far (each once)."""
        for name in self.processes:
            self._note_exit(name)
        return list(self.unexpected_exits)

    def _note_exit(self, name: str) -> None:
        proc = self.processes.get(name)
        if proc is None or proc.poll() is None or proc.pid in self._accounted:
            return
        self._accounted.add(proc.pid)
        self.unexpected_exits.append((name, int(proc.returncode)))

    def log_tail(self, name: str, chars: int = 3000) -> str:
        path = self.root / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""
