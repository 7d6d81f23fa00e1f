"""A Deployment's container, run as a local process the way its pod would run it.

The command is the container's (``python`` is this interpreter), the
environment is the container's as rendered (ConfigMap values included), the
image's own ENV is added, and only what ties the pod to the cluster is
replaced, each replacement named explicitly by the caller:

- Secrets, by local equivalents (``secrets``),
- addresses (NATS URLs, database URLs), by local ones (``replace``),
- listen ports, by free ports; listen hosts, by 127.0.0.1.

The probes then run against those ports, on the same paths.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.k8s.manifests import REPO, FieldRef, Manifests, Obj, SecretRef, only_container
from tests.k8s.natsproc import free_port

#: The image's ENV (Dockerfile, runtime stage) that matters to the process.
IMAGE_ENV = {"PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1"}


class LocalPod:
    """One service process built from a rendered Deployment.

    Args:
        overlay: The rendered overlay.
        name: The Deployment.
        workdir: Working directory, HOME and TMPDIR of the process (its /tmp emptyDir).
        secrets: Value of each Secret key the container reads.
        replace: Environment variables whose rendered value points into the cluster, with
            the local value to use; each must exist in the rendered environment.
    """

    def __init__(
        self,
        overlay: Manifests,
        name: str,
        workdir: Path,
        *,
        secrets: Mapping[SecretRef, str],
        replace: Mapping[str, str],
    ) -> None:
        self.name = name
        self.deployment = overlay.get("Deployment", name)
        self.container = only_container(self.deployment)
        self.workdir = workdir
        rendered = overlay.container_env(self.container)
        missing = sorted(set(replace) - set(rendered))
        assert not missing, f"{name}: the manifest has no {missing}; update the test with the manifest"
        container_ports = {p["containerPort"]: p["name"] for p in self.container["ports"]}
        #: Container port name -> the local port the process listens on.
        self.ports: dict[str, int] = {}
        self.env: dict[str, str] = {}
        for key, value in rendered.items():
            if key in replace:
                self.env[key] = replace[key]
            elif isinstance(value, SecretRef):
                assert value in secrets, f"{name}: no local value for Secret {value.name}/{value.key} ({key})"
                self.env[key] = secrets[value]
            elif isinstance(value, FieldRef):
                raise AssertionError(f"{name}: downward-API variable {key} is not expected in a service")
            elif key.endswith("_PORT") and value.isdigit() and int(value) in container_ports:
                port = free_port()
                self.ports[container_ports[int(value)]] = port
                self.env[key] = str(port)
            elif key.endswith("_HOST") and value == "0.0.0.0":
                self.env[key] = "127.0.0.1"
            else:
                self.env[key] = value
        unbound = set(container_ports.values()) - set(self.ports)
        assert not unbound, f"{name}: no setting binds container port(s) {unbound}"
        self.log_file = workdir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        command = list(self.container["command"])
        if command[0] == "python":
            command[0] = sys.executable
        return command

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.workdir),
            "TMPDIR": str(self.workdir),
            # The project as installed in the image (here: the working tree).
            "PYTHONPATH": str(REPO),
            **IMAGE_ENV,
            **self.env,
        }
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                env=env,
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def probe(self, kind: str) -> tuple[bool, str]:
        """Runs one of the container's probes once, as the kubelet would; (ok, detail)."""
        spec: Obj = self.container[kind]
        if "httpGet" in spec:
            port = spec["httpGet"]["port"]
            local = self.ports[port] if isinstance(port, str) else self._by_number(port)
            try:
                response = httpx.get(f"http://127.0.0.1:{local}{spec['httpGet']['path']}", timeout=3)
            except httpx.HTTPError as exc:
                return False, repr(exc)
            return 200 <= response.status_code < 400, f"{response.status_code} {response.text[:300]}"
        if "grpc" in spec:
            local = self._by_number(spec["grpc"]["port"])
            try:
                with grpc.insecure_channel(f"127.0.0.1:{local}") as channel:
                    reply = health_pb2_grpc.HealthStub(channel).Check(
                        health_pb2.HealthCheckRequest(service=spec["grpc"].get("service", "")), timeout=3
                    )
            except grpc.RpcError as exc:
                return False, repr(exc)
            return reply.status == health_pb2.HealthCheckResponse.SERVING, str(reply.status)
        raise AssertionError(f"{self.name}: unsupported probe {spec}")

    def _by_number(self, number: int) -> int:
        name = next(p["name"] for p in self.container["ports"] if p["containerPort"] == number)
        return self.ports[name]

    def wait_probe(self, kind: str = "readinessProbe", timeout: float | None = None) -> None:
        """Polls a probe until it passes, within the startup probe's budget by default."""
        if timeout is None:
            startup: Obj = self.container.get("startupProbe") or self.container[kind]
            timeout = float(startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3))
        deadline = time.monotonic() + timeout
        detail = ""
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise AssertionError(f"{self.name} exited ({self.returncode}):\n{self.log_tail()}")
            ok, detail = self.probe(kind)
            if ok:
                return
            time.sleep(0.1)
        raise AssertionError(
            f"{self.name} {kind} still failing after {timeout}s: {detail}\n{self.log_tail()}"
        )

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    @property
    def grace_period(self) -> float:
        return float(self.deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"])

    def terminate(self) -> int:
        """SIGTERM, as the kubelet sends; SIGKILL after terminationGracePeriodSeconds. The exit code."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(self.grace_period)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
                raise AssertionError(
                    f"{self.name} did not stop within terminationGracePeriodSeconds:\n{self.log_tail()}"
                ) from None
        return int(self.process.returncode)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def log_tail(self, size: int = 4000) -> str:
        try:
            return self.log_file.read_text(errors="replace")[-size:]
        except FileNotFoundError:
            return ""
