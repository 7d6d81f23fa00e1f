"""Local stand-ins for what the pods reach in the cluster: NATS from the rendered config."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from choreoctl.stack.ports import free_port
from tests.k8s.manifests import SERVICES, Manifests, SecretRef, only_container
from tests.k8s.natsconf import FILES, server_env, write_config
from tests.k8s.natsproc import ConfiguredNats, LocalCluster
from tests.tlscerts import CertificateAuthority


def nats_tls_mount(overlay: Manifests) -> str | None:
    """Where the NATS container mounts its certificate (the `nats-tls` Secret), if it does."""
    statefulset = overlay.get("StatefulSet", "nats")
    volumes = {v["name"]: v for v in statefulset["spec"]["template"]["spec"]["volumes"]}
    for mount in only_container(statefulset).get("volumeMounts", []):
        if volumes.get(mount["name"], {}).get("secret", {}).get("secretName") == "nats-tls":
            return str(mount["mountPath"])
    return None


def local_nats_tls(
    overlay: Manifests, config_dir: Path, pki: Path, ca: CertificateAuthority | None = None
) -> CertificateAuthority | None:
    """The `nats-tls` Secret as cert-manager would write it (ca.crt, tls.crt, tls.key), made here
    for loopback by ``ca`` (a new one if None; the nodes of one cluster share it), with the config
    files written in ``config_dir`` pointed at it. None when the overlay's NATS has no TLS (dev)."""
    mount = nats_tls_mount(overlay)
    if mount is None:
        return None
    ca = ca or CertificateAuthority(pki.parent / f"{pki.name}-ca", "nats")
    leaf = ca.issue("nats", dns=("localhost", "nats"))
    pki.mkdir(parents=True, exist_ok=True)
    (pki / "ca.crt").write_bytes(ca.cert_file.read_bytes())
    leaf.cert.rename(pki / "tls.crt")
    leaf.key.rename(pki / "tls.key")
    for name in FILES:
        path = config_dir / name
        path.write_text(path.read_text().replace(mount.rstrip("/") + "/", f"{pki}/"))
    return ca


def route_login(overlay: Manifests, passwords: Mapping[SecretRef, str]) -> str | None:
    """The route password when the overlay's routes log in (prod), else None."""
    return passwords.get(SecretRef("nats-routes", "password"))


def loopback_routes(cluster: LocalCluster, password: str) -> None:
    """Runs each node's rendered cluster block as it is, on loopback: its `port` line set to the
    node's free route port and NATS_ROUTES expanded as the kubelet would, the pod names pointed
    at those ports. (nats-server's --cluster/--routes flags would replace the block's login.)"""
    ports = [node.cluster_port for node in cluster.nodes]
    for node in cluster.nodes:
        routes = node.env["NATS_ROUTES"].replace("$(NATS_ROUTE_PASSWORD)", password)
        for i, port in enumerate(ports):
            routes = re.sub(rf"@nats-{i}\.[\w.-]+:6222", f"@127.0.0.1:{port}", routes)
        node.env["NATS_ROUTES"] = routes
        conf = node.config.parent / "cluster.conf"
        text, count = re.subn(
            r"^(\s*)port: 6222$", rf"\g<1>port: {node.cluster_port}", conf.read_text(), flags=re.M
        )
        assert count == 1, "cluster.conf sets the route port once"
        conf.write_text(text)
        node.cluster_port = None  # no flags: the file's cluster block runs


def nats_passwords(overlay: Manifests) -> dict[SecretRef, str]:
    """Every NATS password Secret the overlay refers to (the services' and the routes'): the dev
    values where the overlay ships them, test values otherwise (prod ships no Secret)."""
    passwords: dict[SecretRef, str] = {}
    names = (*(f"{s}-nats" for s in SERVICES), "nats-routes")
    for workload in overlay.workloads():
        for value in overlay.settings_env(workload).values():
            if isinstance(value, SecretRef) and value.name.startswith(names):
                passwords[value] = overlay.secret_value(value) or f"test-{value.name}-{value.key}"
    return passwords


def user_passwords(overlay: Manifests, passwords: Mapping[SecretRef, str]) -> dict[str, str]:
    """NATS user -> password, as each service's Deployment reads them."""
    users = {}
    for service in SERVICES:
        env = overlay.settings_env(overlay.get("Deployment", service))
        prefix = service.upper() + "_"
        ref = env[prefix + "NATS_PASSWORD"]
        assert isinstance(ref, SecretRef)
        users[str(env[prefix + "NATS_USER"])] = passwords[ref]
    return users


def sqlite_urls(overlay: Manifests, service: str, directory: Path) -> dict[str, str]:
    """Every database URL the service reads from a Secret, as a SQLite file in ``directory``."""
    env = overlay.settings_env(overlay.get("Deployment", service))
    return {
        key: f"sqlite+aiosqlite:///{directory / key.lower()}.db"
        for key, value in env.items()
        if isinstance(value, SecretRef) and key.endswith("_URL")
    }


@contextmanager
def single_nats(
    overlay: Manifests, workdir: Path, passwords: Mapping[SecretRef, str]
) -> Iterator[ConfiguredNats]:
    """One node running the overlay's nats.conf + auth.conf, as the nats-0 pod would."""
    config = write_config(overlay, workdir / "config", store_dir=workdir / "store")
    node = ConfiguredNats(config, server_env(overlay, dict(passwords), "nats-0"), workdir / "nats-0")
    node.start()
    try:
        node.wait_ready()
        yield node
    finally:
        node.stop()


@contextmanager
def nats_cluster(
    overlay: Manifests, workdir: Path, passwords: Mapping[SecretRef, str]
) -> Iterator[LocalCluster]:
    """As many nodes as the overlay's StatefulSet, each with its own store, routed on loopback."""
    replicas = int(overlay.get("StatefulSet", "nats")["spec"]["replicas"])
    names = [f"nats-{i}" for i in range(replicas)]
    configs = [write_config(overlay, workdir / n / "config", store_dir=workdir / n / "store") for n in names]
    ca = None
    for config in configs:
        # The nodes' certificates come from one CA, so that each route verifies its peer.
        ca = local_nats_tls(overlay, config.parent, config.parent.parent / "pki", ca)
    envs = [server_env(overlay, dict(passwords), n) for n in names]
    cluster = LocalCluster(configs, envs, workdir)
    cluster.ca = ca  # type: ignore[attr-defined]
    password = route_login(overlay, passwords)
    if password is not None:
        loopback_routes(cluster, password)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@dataclass(frozen=True)
class MailSink:
    """The dev overlay's mail sink running on loopback: where notification sends, and its log."""

    host: str
    port: int
    log_file: Path

    def log_text(self) -> str:
        return self.log_file.read_text(errors="replace")

    def smtp_settings(self) -> dict[str, str]:
        """notification's settings for this sink (plain SMTP, no login), as the dev overlay sets them."""
        return {
            "NOTIFICATION_SMTP_HOST": self.host,
            "NOTIFICATION_SMTP_PORT": str(self.port),
            "NOTIFICATION_SMTP_SECURITY": "none",
        }


@contextmanager
def mail_sink(dev: Manifests, workdir: Path, timeout: float = 30.0) -> Iterator[MailSink]:
    """The dev overlay's ``mail-sink`` container, its command run as it is on a free loopback
    port (only the listen address changes), ready when its TCP readiness probe would pass."""
    container = only_container(dev.get("Deployment", "mail-sink"))
    (port_spec,) = container["ports"]
    listen = f"0.0.0.0:{port_spec['containerPort']}"
    assert container["readinessProbe"]["tcpSocket"]["port"] == port_spec["name"]
    port = free_port()
    command = [f"127.0.0.1:{port}" if arg == listen else arg for arg in container["command"]]
    assert command != container["command"], f"the sink does not listen on {listen}: {command}"
    if command[0] == "python":
        command[0] = sys.executable
    workdir.mkdir(parents=True, exist_ok=True)
    log_file = workdir / "mail-sink.log"
    with log_file.open("ab") as log:
        process = subprocess.Popen(
            command,
            cwd=workdir,
            env={"PATH": "/usr/bin:/bin", "HOME": str(workdir), "PYTHONUNBUFFERED": "1"},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + timeout
        while True:
            assert process.poll() is None, f"the mail sink exited: {log_file.read_text()}"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, f"the mail sink is not listening: {log_file.read_text()}"
                time.sleep(0.1)
        yield MailSink("127.0.0.1", port, log_file)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def notification_smtp(overlay: Manifests, sink: MailSink) -> tuple[dict[str, str], dict[str, str]]:
    """(replace, operator) for notification's LocalPod: the overlay's SMTP settings pointed at the
    local sink. What the overlay sets is replaced; what it leaves to the operator (prod: the
    relay, the sender) is given as the operator would; a relay login (prod's notification-smtp
    Secret) is emptied, since the sink takes mail without one."""
    env = overlay.settings_env(overlay.get("Deployment", "notification"))
    wanted = {**sink.smtp_settings(), "NOTIFICATION_MAIL_FROM": "bookings@choreo.test"}
    replace = {k: v for k, v in wanted.items() if k in env and k != "NOTIFICATION_MAIL_FROM"}
    operator = {k: v for k, v in wanted.items() if k not in env}
    for login in ("NOTIFICATION_SMTP_USERNAME", "NOTIFICATION_SMTP_PASSWORD"):
        if login in env:
            replace[login] = ""
    return replace, operator
