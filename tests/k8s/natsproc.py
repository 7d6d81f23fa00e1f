"""nats-server processes running the rendered configuration, on loopback.

The configuration files are the ones the ConfigMap holds; only what is tied to
the pod is overridden on the command line: listen address and ports (free
ones), pid and log files, and for a cluster the route URLs (loopback instead of
the pods' DNS names). ``server_name`` still comes from ``POD_NAME``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from choreoctl.stack.natsserver import find_binary
from choreoctl.stack.ports import free_port


class ConfiguredNats:
    """One nats-server node started from a config file.

    Args:
        config: The rendered nats.conf (with its includes beside it).
        env: The NATS container's environment (POD_NAME, passwords).
        workdir: Pid and log files.
        cluster_port: Route port of this node (cluster only).
        routes: Route URLs of every node (cluster only).
    """

    def __init__(
        self,
        config: Path,
        env: dict[str, str],
        workdir: Path,
        *,
        cluster_port: int | None = None,
        routes: list[str] | None = None,
    ) -> None:
        self.config = config
        self.env = env
        self.workdir = workdir
        self.port = free_port()
        self.monitor_port = free_port()
        self.cluster_port = cluster_port
        self.routes = routes or []
        self.log_file = workdir / "nats-server.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def name(self) -> str:
        return self.env["POD_NAME"]

    def args(self) -> list[str]:
        args = [find_binary(), "-c", str(self.config), "-a", "127.0.0.1", "-p", str(self.port)]
        args += ["-m", str(self.monitor_port), "-P", str(self.workdir / "nats.pid"), "-l", str(self.log_file)]
        if self.cluster_port is not None:
            args += ["--cluster", f"nats://127.0.0.1:{self.cluster_port}", "--routes", ",".join(self.routes)]
        return args

    def start(self) -> None:
        """Starts the process (see ``wait_ready``)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **self.env}
        self.process = subprocess.Popen(
            self.args(), env=env, stdin=subprocess.DEVNULL, start_new_session=True
        )

    def wait_ready(self, path: str = "/healthz?js-server-only=true", timeout: float = 30.0) -> None:
        """Polls the monitor endpoint the readiness probe uses until it answers 200."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise AssertionError(f"{self.name} exited: {self.log_tail()}")
            try:
                response = httpx.get(f"http://127.0.0.1:{self.monitor_port}{path}", timeout=2)
                if response.status_code == 200:
                    return
                last = response.text
            except httpx.HTTPError as exc:
                last = repr(exc)
            time.sleep(0.1)
        raise AssertionError(f"{self.name} not ready in {timeout}s ({last}): {self.log_tail()}")

    def monitor(self, path: str) -> dict[str, Any]:
        """A monitoring endpoint's JSON (/varz, /jsz, /connz ...)."""
        response = httpx.get(f"http://127.0.0.1:{self.monitor_port}{path}", timeout=5)
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data

    def kill(self) -> None:
        """SIGKILL, as a crashed node."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_text(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, size: int = 3000) -> str:
        return self.log_text()[-size:]


class LocalCluster:
    """Three (or N) nodes with routes between them, as the prod overlay's cluster.conf."""

    def __init__(self, configs: list[Path], envs: list[dict[str, str]], workdir: Path) -> None:
        ports = [free_port() for _ in envs]
        routes = [f"nats://127.0.0.1:{p}" for p in ports]
        self.nodes = [
            ConfiguredNats(config, env, workdir / env["POD_NAME"], cluster_port=port, routes=routes)
            for config, env, port in zip(configs, envs, ports, strict=True)
        ]

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        for node in self.nodes:
            node.wait_ready()

    def node(self, name: str) -> ConfiguredNats:
        return next(n for n in self.nodes if n.name == name)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
