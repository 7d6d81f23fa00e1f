"""The NATS configuration as the manifests ship it, written out to run a local nats-server."""

from __future__ import annotations

import re
from pathlib import Path

from tests.k8s.manifests import Manifests, SecretRef, only_container

#: Files of the nats-config ConfigMap (nats.conf includes the others).
FILES = ("nats.conf", "auth.conf", "cluster.conf", "tls.conf")
STORE_LINE = re.compile(r'^(\s*store_dir:\s*)"[^"]*"\s*$', re.MULTILINE)


def write_config(overlay: Manifests, directory: Path, store_dir: Path | None = None) -> Path:
    """Writes the rendered NATS config files into ``directory``; returns nats.conf's path.

    Args:
        overlay: The rendered overlay.
        directory: Where to write the files.
        store_dir: Replaces the one ``store_dir`` line (the pod's volume path) when given:
            it is the only line changed, everything else runs as rendered.
    """
    directory.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        text = overlay.configmap_file("nats-config", name)
        if name == "nats.conf" and store_dir is not None:
            text, count = STORE_LINE.subn(lambda m: f'{m.group(1)}"{store_dir}"', text)
            assert count == 1, "nats.conf must set store_dir exactly once"
        (directory / name).write_text(text)
    return directory / "nats.conf"


def server_env(overlay: Manifests, passwords: dict[SecretRef, str], pod_name: str) -> dict[str, str]:
    """The NATS container's environment: POD_NAME, and each Secret as given in ``passwords``."""
    container = only_container(overlay.get("StatefulSet", "nats"))
    env: dict[str, str] = {}
    for name, value in overlay.container_env(container).items():
        if isinstance(value, SecretRef):
            env[name] = passwords[value]
        elif isinstance(value, str):
            env[name] = value
        else:
            assert value.path == "metadata.name", f"unexpected downward-API field {value.path}"
            env[name] = pod_name
    return env


def auth_users(auth_conf: str) -> dict[str, str]:
    """user -> the environment variable holding its password, from auth.conf."""
    return dict(re.findall(r"\{\s*user:\s*(\w+),\s*password:\s*\$(\w+)", auth_conf))


def routes(cluster_conf: str) -> list[str]:
    block = re.search(r"routes:\s*\[(.*?)\]", cluster_conf, re.DOTALL)
    return block.group(1).split() if block else []
