"""A Deployment's container, run as a local process the way its pod would run it.

The command is the container's (``python`` is this interpreter), the
environment is the container's as rendered (ConfigMap values included), the
image's own ENV is added, and only what ties the pod to the cluster is
replaced, each replacement named explicitly by the caller:

- Secrets, by local equivalents (``secrets``); the projected Secret volume that
  CHOREO_SECRETS_DIR names is written as a local directory of files, one per item,
  with the kubelet's names and mode,
- addresses (NATS URLs, database URLs), by local ones (``replace``),
- listen ports, by free ports; listen hosts, by 127.0.0.1,
- the pod's emptyDir volumes, by local directories: ``/tmp`` is the working
  directory (HOME and TMPDIR), any other emptyDir is ``<workdir>/<volume>``, and a
  SQLite database URL is pointed at the same file there. A SQLite file outside
  every emptyDir is refused: the root filesystem is read-only in the pod.

The probes then run against those ports, on the same paths.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

from choreoctl.stack.ports import free_port
from tests.k8s.manifests import (
    REPO,
    SECRETS_DIR_ENV,
    FieldRef,
    Manifests,
    Obj,
    SecretRef,
    only_container,
)
from tests.support import TOKEN_PRIVATE_KEY, TOKEN_PUBLIC_KEY

#: The image's ENV (Dockerfile, runtime stage) that matters to the process.
IMAGE_ENV = {"PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1"}
#: Longest a local process may take to pass a probe (seconds).
LOCAL_START_SECONDS = 90.0
#: A SQLAlchemy SQLite URL: driver part, then the file path (absolute when it starts with /).
SQLITE_URL = re.compile(r"^(sqlite(?:\+\w+)?:///)(.*)$")
#: The payment-token key pair's Secrets (``choreo.sealing``): a test brings no value for them,
#: every pod gets this test session's pair (``tests.support``), so booking and payment agree.
TOKEN_KEY_SECRETS = {
    SecretRef("payment-token-keys", "private-key"): TOKEN_PRIVATE_KEY,
    SecretRef("payment-token-keys", "public-key"): TOKEN_PUBLIC_KEY,
}


def emptydir_mounts(workload: Obj, container: Obj) -> dict[str, str]:
    """Mount path -> volume name, for the container's emptyDir volumes."""
    volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"].get("volumes", [])}
    return {
        m["mountPath"]: m["name"]
        for m in container.get("volumeMounts", [])
        if "emptyDir" in volumes.get(m["name"], {})
    }


def sqlite_path(url: str) -> str | None:
    """The file of a SQLite URL (``None`` for other databases and in-memory SQLite)."""
    match = SQLITE_URL.match(url)
    if match is None or match.group(2) in ("", ":memory:"):
        return None
    return match.group(2)


def on_mount(path: str, mounts: Mapping[str, object]) -> str | None:
    """The mount path ``path`` lies under (the deepest), or None."""
    found = [m for m in mounts if path == m or path.startswith(m.rstrip("/") + "/")]
    return max(found, key=len) if found else None


class LocalPod:
    """One service process built from a rendered Deployment.

    Args:
        overlay: The rendered overlay.
        name: The Deployment.
        tls_ca: Verifies the process's certificate when a probe's scheme is HTTPS.
        workdir: Working directory, HOME and TMPDIR of the process (its /tmp emptyDir).
        secrets: Value of each Secret key the container reads (the payment-token keys default to
            ``TOKEN_KEY_SECRETS``).
        replace: Settings whose rendered value points into the cluster, with the local value
            to use; each must exist in the rendered environment or the secret volume (a file
            of the volume gets the local value as its content).
        operator: Settings the overlay leaves to the operator (the prod SMTP relay), with the
            value the operator would set; none may be in the rendered environment.
    """

    def __init__(
        self,
        overlay: Manifests,
        name: str,
        workdir: Path,
        *,
        secrets: Mapping[SecretRef, str],
        replace: Mapping[str, str],
        operator: Mapping[str, str] | None = None,
        tls_ca: Path | None = None,
    ) -> None:
        self.name = name
        #: CA that verifies the process's certificate in HTTPS probes (the kubelet verifies none).
        self.tls_ca = tls_ca
        self.deployment = overlay.get("Deployment", name)
        self.container = only_container(self.deployment)
        self.workdir = workdir
        #: Mount path of each emptyDir -> the local directory standing in for it.
        self.volumes: dict[str, Path] = {
            path: workdir if path == "/tmp" else workdir / volume
            for path, volume in emptydir_mounts(self.deployment, self.container).items()
        }
        assert "/tmp" in self.volumes, f"{name}: HOME and TMPDIR are /tmp, which needs an emptyDir"
        rendered = overlay.container_env(self.container)
        volume = overlay.secret_volume(self.deployment)
        files = {} if volume is None else volume.files
        missing = sorted(set(replace) - set(rendered) - set(files))
        assert not missing, f"{name}: the manifest has no {missing}; update the test with the manifest"
        operator = dict(operator or {})
        preset = sorted(set(operator) & (set(rendered) | set(files)))
        assert not preset, f"{name}: the manifest sets {preset}, which the test gives as the operator's"
        container_ports = {p["containerPort"]: p["name"] for p in self.container["ports"]}
        #: Container port name -> the local port the process listens on.
        self.ports: dict[str, int] = {}
        self.env: dict[str, str] = {}
        #: File name -> content, of the secret volume (written by ``start``).
        self.secret_files: dict[str, str] = {}
        #: The local directory standing in for the secret volume, if the pod has one.
        self.secrets_dir: Path | None = None
        secrets = {**TOKEN_KEY_SECRETS, **secrets}
        if volume is not None:
            for file, ref in files.items():
                if file in replace:
                    self.secret_files[file] = replace[file]
                else:
                    # The test's value, else the one the overlay ships (dev generates its Secrets).
                    value = secrets.get(ref) or overlay.secret_value(ref)
                    assert value is not None, (
                        f"{name}: no local value for Secret {ref.name}/{ref.key} ({file})"
                    )
                    self.secret_files[file] = value
            self.secrets_dir = workdir / volume.name
        for key, value in rendered.items():
            if key == SECRETS_DIR_ENV and self.secrets_dir is not None:
                self.env[key] = str(self.secrets_dir)
            elif key in replace:
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
            elif (path := sqlite_path(value)) is not None:
                self.env[key] = self._local_sqlite(key, value, path)
            else:
                self.env[key] = value
        self.env.update(operator)
        unbound = set(container_ports.values()) - set(self.ports)
        assert not unbound, f"{name}: no setting binds container port(s) {unbound}"
        self.log_file = workdir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def _local_sqlite(self, key: str, url: str, path: str) -> str:
        """``url`` with its file moved from the pod's emptyDir to the local directory."""
        mount = on_mount(path, self.volumes) if path.startswith("/") else None
        assert mount is not None, (
            f"{self.name}: {key} puts SQLite at {path!r}, outside every emptyDir "
            f"({sorted(self.volumes)}); the pod's root filesystem is read-only"
        )
        local = self.volumes[mount] / os.path.relpath(path, mount)
        return url[: len(url) - len(path)] + str(local)

    def local_path(self, pod_path: str) -> Path:
        """Where a file the pod writes under one of its emptyDirs is, for this process."""
        mount = on_mount(pod_path, self.volumes)
        assert mount is not None, f"{pod_path} is on no emptyDir of {self.name}"
        return self.volumes[mount] / os.path.relpath(pod_path, mount)

    def command(self) -> list[str]:
        command = list(self.container["command"])
        if command[0] == "python":
            command[0] = sys.executable
        return command

    def start(self) -> None:
        """Starts the process; again after ``kill`` or ``terminate``, it is a container restart
        (the emptyDirs, here the local directories, keep their files)."""
        for directory in self.volumes.values():
            # The kubelet creates each emptyDir empty before the container starts.
            directory.mkdir(parents=True, exist_ok=True)
        if self.secrets_dir is not None:
            self._write_secret_volume(self.secrets_dir)
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

    def _write_secret_volume(self, directory: Path) -> None:
        """The projected volume as the kubelet writes it: each item a file named by its
        ``path``, holding the Secret key's bytes (no newline added), with the volume's mode."""
        mode = int(self._secret_volume_spec().get("defaultMode", 0o644))
        directory.mkdir(parents=True, exist_ok=True)
        for file, content in self.secret_files.items():
            target = directory / file
            if target.exists():
                # A restart (start after kill) rewrites the files, as the kubelet refreshes them.
                target.chmod(0o600)
            target.write_text(content)
            target.chmod(mode)

    def _secret_volume_spec(self) -> Obj:
        assert self.secrets_dir is not None
        for volume in self.deployment["spec"]["template"]["spec"]["volumes"]:
            if volume["name"] == self.secrets_dir.name:
                return dict(volume["projected"])
        raise AssertionError(f"{self.name}: no volume {self.secrets_dir.name}")

    def probe(self, kind: str) -> tuple[bool, str]:
        """Runs one of the container's probes once, as the kubelet would; (ok, detail)."""
        spec: Obj = self.container[kind]
        if "httpGet" in spec:
            port = spec["httpGet"]["port"]
            local = self.ports[port] if isinstance(port, str) else self._by_number(port)
            scheme = str(spec["httpGet"].get("scheme", "HTTP")).lower()
            verify = str(self.tls_ca) if self.tls_ca else True
            try:
                response = httpx.get(
                    f"{scheme}://127.0.0.1:{local}{spec['httpGet']['path']}", timeout=3, verify=verify
                )
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
        """Polls a probe until it passes: by default within the startup probe's budget, but at
        most ``LOCAL_START_SECONDS`` (the gateway's budget covers replaying millions of events;
        the tests' streams hold a few hundred)."""
        if timeout is None:
            startup: Obj = self.container.get("startupProbe") or self.container[kind]
            budget = float(startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3))
            timeout = min(budget, LOCAL_START_SECONDS)
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
