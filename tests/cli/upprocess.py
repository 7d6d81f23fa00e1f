"""A ``choreo up`` run as a child process, for the end-to-end tests of ``tests/cli``."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

from choreoctl.stack.services import SERVICES

ROOT = Path(__file__).resolve().parents[2]
ANY_PORT = [
    "--grpc-port",
    "0",
    "--http-port",
    "0",
    "--booking-health-port",
    "0",
    "--payment-health-port",
    "0",
    "--notification-health-port",
    "0",
    "--analytics-health-port",
    "0",
    "--inventory-health-port",
    "0",
]


class Up:
    """A running ``choreo up`` whose console output is collected line by line."""

    def __init__(self, *args: str, env: Mapping[str, str] | None = None, cwd: Path = ROOT) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "choreoctl", "up", *args],
            cwd=cwd,
            env=dict(env) if env is not None else None,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 60.0, after: int = 0) -> re.Match[str]:
        """The first line from index ``after`` matching ``pattern``; fails at the deadline or on exit."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines[after:]:
                match = regex.search(line)
                if match:
                    return match
            if self.process.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.05)
        raise AssertionError(f"no line matching {pattern!r}; output:\n{self.output}")

    def endpoint(self, label: str) -> str:
        return self.wait_for(rf"^  {label}\s+(\S+)").group(1)

    def service_pids(self) -> dict[str, int]:
        pids = {}
        for line in self.lines:
            match = re.search(rf" ({'|'.join(SERVICES)})\s+started \(pid (\d+)\)", line)
            if match:
                pids[match.group(1)] = int(match.group(2))
        return pids

    def interrupt(self, timeout: float = 60.0) -> int:
        self.process.send_signal(signal.SIGINT)
        code = self.process.wait(timeout)
        self._reader.join(5)
        return code

    def kill(self) -> None:
        """Clean-up after a failed test: no process may outlive it."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for pid in self.service_pids().values():
            if alive(pid):
                os.killpg(pid, signal.SIGKILL)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def assert_ready(up: Up) -> None:
    for name in SERVICES:
        url = up.wait_for(rf"^  health\s+{name}\s+(\S+)").group(1)
        assert httpx.get(url, timeout=5).status_code == 200, url
    with grpc.insecure_channel(up.endpoint("gRPC")) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    openapi = httpx.get(up.endpoint("OpenAPI"), timeout=5)
    assert "/v1/bookings" in openapi.json()["paths"]


def assert_stopped_cleanly(up: Up, code: int) -> None:
    assert code == 0, up.output
    for name in SERVICES:
        assert re.search(rf" {name}\s+stopped \(exit 0\)", up.output), name
    assert not [pid for pid in up.service_pids().values() if alive(pid)]


def process_env(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)
