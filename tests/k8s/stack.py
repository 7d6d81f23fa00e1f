"""Local stand-ins for what the pods reach in the cluster: NATS from the rendered config."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from tests.k8s.manifests import Manifests, SecretRef
from tests.k8s.natsconf import server_env, write_config
from tests.k8s.natsproc import ConfiguredNats, LocalCluster

SERVICES = ("booking", "payment", "gateway")


def nats_passwords(overlay: Manifests) -> dict[SecretRef, str]:
    """Every NATS password Secret the overlay refers to: the dev values where the overlay ships
    them, test values otherwise (prod ships no Secret)."""
    passwords: dict[SecretRef, str] = {}
    for workload in overlay.workloads():
        for value in overlay.settings_env(workload).values():
            if isinstance(value, SecretRef) and value.name.startswith(tuple(f"{s}-nats" for s in SERVICES)):
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
    envs = [server_env(overlay, dict(passwords), n) for n in names]
    cluster = LocalCluster(configs, envs, workdir)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
