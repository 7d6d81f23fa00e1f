"""The whole system as separate processes, for end-to-end and fault tests.

Each service runs as ``python -m <service>`` with its configuration in the
environment, as in a deployment, so the tests can SIGKILL and restart any one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from choreo.ports import free_port

SERVICES = ("booking", "payment", "gateway")


class Stack:
    """booking, payment and gateway processes sharing one nats-server.

    Args:
        root: Folder for databases and logs.
        nats_url: The server the services use.
        database_urls: Per-service database URL (default: SQLite files under ``root``).
        env: Extra environment for every service.
    """

    def __init__(
        self,
        root: Path,
        nats_url: str,
        database_urls: dict[str, str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.root = root
        self.nats_url = nats_url
        self.grpc_port = free_port()
        self.http_port = free_port()
        self.health_ports = {"booking": free_port(), "payment": free_port()}
        self.database_urls = {name: f"sqlite+aiosqlite:///{root / f'{name}.db'}" for name in SERVICES} | (
            database_urls or {}
        )
        self.ledger_url = f"sqlite+aiosqlite:///{root / 'psp-ledger.db'}"
        self.extra_env = env or {}
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def environment(self, name: str) -> dict[str, str]:
        prefix = name.upper() + "_"
        env = {
            **os.environ,
            prefix + "NATS_URL": self.nats_url,
            prefix + "DATABASE_URL": self.database_urls[name],
            prefix + "LOG_FORMAT": "json",
            prefix + "SHUTDOWN_GRACE_SECONDS": "5",
            prefix + "RETRY_BACKOFF_SECONDS": "0.1",
            prefix + "ACK_WAIT_SECONDS": "5",
        }
        if name == "gateway":
            env |= {prefix + "GRPC_PORT": str(self.grpc_port), prefix + "HTTP_PORT": str(self.http_port)}
            env |= {prefix + "HOST": "127.0.0.1"}
        else:
            env |= {prefix + "HEALTH_PORT": str(self.health_ports[name]), prefix + "HEALTH_HOST": "127.0.0.1"}
        if name == "payment":
            env[prefix + "PROVIDER_LEDGER_URL"] = self.ledger_url
        return env | self.extra_env

    def ready_url(self, name: str) -> str:
        if name == "gateway":
            return f"{self.http_base}/readyz"
        return f"http://127.0.0.1:{self.health_ports[name]}/readyz"

    def start(self, *names: str, timeout: float = 30.0) -> None:
        """Starts the services (all by default) and waits until each is ready."""
        for name in names or SERVICES:
            log = (self.root / f"{name}.log").open("ab")
            self.processes[name] = subprocess.Popen(
                [sys.executable, "-m", name],
                env=self.environment(name),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        for name in names or SERVICES:
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
        proc = self.processes[name]
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def terminate(self, name: str, timeout: float = 15.0) -> int:
        """SIGTERM and wait: the graceful path; returns the exit code."""
        proc = self.processes[name]
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill(name)
        return int(proc.returncode)

    def stop(self) -> None:
        for name in reversed(list(self.processes)):
            self.terminate(name)

    def log_tail(self, name: str, chars: int = 3000) -> str:
        path = self.root / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""
