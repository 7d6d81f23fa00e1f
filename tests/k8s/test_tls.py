"""The prod overlay: TLS on every connection, bearer tokens on the gateway, no reflection or docs.

The last test runs the rendered prod NATS configuration as three real nodes on loopback (the
`nats-tls` Secret made here as cert-manager would) and checks what a client and a would-be
peer get: TLS from the first byte with the services' settings, nothing in plain text, and no
route without the route password.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import nats
import pytest

from booking.settings import BookingSettings
from choreo.bus import connect
from tests.k8s.manifests import SERVICES, Manifests, SecretRef, only_container
from tests.k8s.natsproc import ConfiguredNats
from tests.k8s.stack import nats_cluster, nats_passwords

pytestmark = pytest.mark.slow


def _env(overlay: Manifests, service: str) -> dict[str, object]:
    return dict(overlay.settings_env(overlay.get("Deployment", service)))


def _mounted_from(overlay: Manifests, service: str, path: str) -> tuple[str, str]:
    """(Secret, key) of the file at ``path`` in the service's container."""
    deployment = overlay.get("Deployment", service)
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    for mount in only_container(deployment)["volumeMounts"]:
        prefix = mount["mountPath"].rstrip("/") + "/"
        if path.startswith(prefix) and "secret" in volumes[mount["name"]]:
            assert mount.get("readOnly") is True
            secret = volumes[mount["name"]]["secret"]
            key = path[len(prefix) :]
            items = {i["path"]: i["key"] for i in secret.get("items", [])} or {key: key}
            return secret["secretName"], items[key]
    raise AssertionError(f"{service}: nothing mounted at {path}")


@pytest.mark.parametrize("service", SERVICES)
def test_prod_services_verify_nats_against_the_ca(overlays: dict[str, Manifests], service: str) -> None:
    env = _env(overlays["prod"], service)
    ca = env[f"{service.upper()}_NATS_TLS_CA_FILE"]
    assert isinstance(ca, str)
    assert _mounted_from(overlays["prod"], service, ca) == ("nats-tls", "ca.crt")
    # The CA only: the server's key stays with NATS.
    deployment = overlays["prod"].get("Deployment", service)
    for volume in deployment["spec"]["template"]["spec"]["volumes"]:
        if volume.get("secret", {}).get("secretName") == "nats-tls":
            assert [i["key"] for i in volume["secret"]["items"]] == ["ca.crt"]


def test_prod_nats_serves_tls_only_and_routes_with_tls_and_a_login(overlays: dict[str, Manifests]) -> None:
    prod = overlays["prod"]
    tls = prod.configmap_file("nats-config", "tls.conf")
    for line in ("tls {", 'cert_file: "/etc/nats-tls/tls.crt"', 'ca_file: "/etc/nats-tls/ca.crt"'):
        assert line in tls
    assert "handshake_first" in tls
    cluster = prod.configmap_file("nats-config", "cluster.conf")
    assert "verify: true" in cluster and "password: $NATS_ROUTE_PASSWORD" in cluster
    sts = prod.get("StatefulSet", "nats")
    volumes = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in only_container(sts)["volumeMounts"]}
    assert volumes[mounts["/etc/nats-tls"]]["secret"]["secretName"] == "nats-tls"
    # Dev stays plain: no tls block, one node.
    assert "tls {" not in overlays["dev"].configmap_file("nats-config", "tls.conf")


def test_prod_gateway_serves_tls_and_requires_tokens(overlays: dict[str, Manifests]) -> None:
    prod = overlays["prod"]
    env = _env(prod, "gateway")
    assert _mounted_from(prod, "gateway", str(env["GATEWAY_TLS_CERT_FILE"])) == ("gateway-tls", "tls.crt")
    assert _mounted_from(prod, "gateway", str(env["GATEWAY_TLS_KEY_FILE"])) == ("gateway-tls", "tls.key")
    assert env["GATEWAY_AUTH"] == "jwt"
    for name in ("GATEWAY_JWT_JWKS_URL", "GATEWAY_JWT_ISSUER", "GATEWAY_JWT_AUDIENCE"):
        assert isinstance(env[name], str) and env[name], name
    assert str(env["GATEWAY_JWT_JWKS_URL"]).startswith("https://")
    assert env["GATEWAY_GRPC_REFLECTION"] == "false"
    assert env["GATEWAY_HTTP_DOCS"] == "false"
    assert env["GATEWAY_PAGE_TOKEN_SECRET"] == SecretRef("gateway-page-token", "secret")
    # Dev keeps what `choreo up` has: no auth, reflection and docs on (the defaults).
    dev = _env(overlays["dev"], "gateway")
    assert not {"GATEWAY_AUTH", "GATEWAY_TLS_CERT_FILE", "GATEWAY_GRPC_REFLECTION"} & set(dev)


def _unhashed(env: dict[str, object]) -> dict[str, object]:
    """Secret references with the generator's hash suffix (dev) taken off the name."""
    return {
        k: SecretRef(re.sub(r"-[a-z0-9]{10}$", "", v.name), v.key) if isinstance(v, SecretRef) else v
        for k, v in env.items()
    }


def test_payment_token_keys_reach_only_their_side(overlays: dict[str, Manifests]) -> None:
    for overlay in overlays.values():
        booking, payment = _unhashed(_env(overlay, "booking")), _unhashed(_env(overlay, "payment"))
        assert booking["BOOKING_PAYMENT_TOKEN_PUBLIC_KEY"] == SecretRef("payment-token-keys", "public-key")
        assert payment["PAYMENT_TOKEN_PRIVATE_KEY"] == SecretRef("payment-token-keys", "private-key")
        assert not [v for v in booking.values() if v == SecretRef("payment-token-keys", "private-key")]
        gateway = _unhashed(_env(overlay, "gateway")).values()
        assert not [v for v in gateway if isinstance(v, SecretRef) and v.name == "payment-token-keys"]


async def test_the_rendered_prod_nats_cluster_speaks_only_tls(
    overlays: dict[str, Manifests], tmp_path: Path
) -> None:
    prod = overlays["prod"]
    passwords = nats_passwords(prod)
    with nats_cluster(prod, tmp_path, passwords) as cluster:
        ca = cluster.ca  # type: ignore[attr-defined]
        configs = [node.config for node in cluster.nodes]
        envs = [node.env for node in cluster.nodes]
        await _routes_up(cluster.nodes[0], 2)
        booking = passwords[next(r for r in passwords if r.name == "booking-nats")]
        settings = BookingSettings(
            nats_url=",".join(cluster.urls),
            nats_user="booking",
            nats_password=booking,  # type: ignore[arg-type]
            nats_tls_ca_file=str(ca.cert_file),
        )
        nc = await connect(settings, allow_reconnect=False, connect_timeout=3)
        await nc.close()
        # Plain text, the same credentials: refused (the server waits for a TLS handshake).
        with pytest.raises(Exception):  # noqa: B017 - nats-py's own error or a timeout
            await nats.connect(
                cluster.urls[0],
                user="booking",
                password=booking,
                allow_reconnect=False,
                connect_timeout=2,
            )
        # A would-be fourth node with the right certificate but no route password: no route.
        intruder_conf = configs[0].parent / "intruder.conf"
        intruder_conf.write_text(_intruder_config(configs[0], cluster.nodes[0]))
        intruder = ConfiguredNats(intruder_conf, {**envs[0], "POD_NAME": "nats-9"}, tmp_path / "nats-9")
        intruder.start()
        try:
            intruder.wait_ready()
            await asyncio.sleep(2)
            assert intruder.monitor("/routez")["num_routes"] == 0
            assert "Authorization Violation" in intruder.log_text()
        finally:
            intruder.stop()


def _intruder_config(config: Path, target: ConfiguredNats) -> str:
    """A node with the cluster's TLS certificate, soliciting a route without the password."""
    text = (config.parent / "tls.conf").read_text()
    cluster = (config.parent / "cluster.conf").read_text()
    tls = cluster[cluster.index("  tls {") : cluster.index("  }", cluster.index("  tls {")) + 3]
    port = re.search(r"^\s*port: (\d+)$", (target.config.parent / "cluster.conf").read_text(), re.M)
    assert port, "the target's route port"
    return (
        f'{text}\nserver_name: "nats-9"\njetstream: disabled\n'
        f"cluster {{\n  name: choreo\n  listen: 127.0.0.1:-1\n{tls}\n"
        f"  routes: [nats://127.0.0.1:{port.group(1)}]\n}}\n"
    )


async def _routes_up(node: ConfiguredNats, peers: int, timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while loop.time() < end:
        routes = node.monitor("/routez?subs=0").get("routes") or []
        if len({r.get("remote_name") for r in routes}) >= peers:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{node.name} has no route to its {peers} peers: {node.log_tail()}")
