"""Project rules for every workload: hardened pods, network isolation, and manifests that
match what the services really read (their settings, ports, grace periods, image user)."""

from __future__ import annotations

import importlib
import os
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic_settings import BaseSettings

from choreo.settings import unknown_variables
from tests.k8s.dockerfile import parse
from tests.k8s.manifests import (
    DEV_ONLY,
    REPO,
    SERVICES,
    Manifests,
    Obj,
    SecretRef,
    containers,
    only_container,
    render,
)
from tests.k8s.pgsetup import DATABASES
from tests.k8s.semantics import selector_matches
from tests.support import TOKEN_KEY_ENV

OVERLAYS = ("dev", "prod")
SETTINGS = {
    "GATEWAY_AUTH",
    "GATEWAY_JWT_JWKS_URL",
    "GATEWAY_JWT_ISSUER",
    "GATEWAY_JWT_AUDIENCE",
    "GATEWAY_TLS_CERT_FILE",
    "GATEWAY_TLS_KEY_FILE",
    "GATEWAY_GRPC_REFLECTION",
    "GATEWAY_HTTP_DOCS",
    "GATEWAY_PAGE_TOKEN_SECRET",
    "PAYMENT_TOKEN_PRIVATE_KEY",
    "BOOKING_PAYMENT_TOKEN_PUBLIC_KEY",
}
SETTINGS = {
    "booking": "booking.settings.BookingSettings",
    "payment": "payment.settings.PaymentSettings",
    "inventory": "inventory.settings.InventorySettings",
    "notification": "notification.settings.NotificationSettings",
    "analytics": "analytics.settings.AnalyticsSettings",
    "gateway": "gateway.settings.GatewaySettings",
}
#: What the prod overlay leaves to the operator (k8s/overlays/prod/notification-smtp.env), with
#: the kind of value the operator sets; the service refuses to start without the relay.
OPERATOR_SETTINGS = {
    "notification": {
        "NOTIFICATION_SMTP_HOST": "smtp.example.com",
        "NOTIFICATION_MAIL_FROM": "bookings@example.com",
    }
}
#: The mail ports notification's NetworkPolicy opens to addresses outside the cluster.
SMTP_PORTS = {465, 587}  # not 25: no direct delivery to every mail exchanger
#: Seconds the process needs, after its own grace period, to exit before SIGKILL.
EXIT_MARGIN = (5, 15)


def settings_class(service: str) -> type[BaseSettings]:
    module, _, name = SETTINGS[service].rpartition(".")
    try:
        cls: type[BaseSettings] = getattr(importlib.import_module(module), name)
    except ImportError as exc:  # pragma: no cover - the service is not written yet
        pytest.fail(f"{SETTINGS[service]} cannot be imported: {exc}")
    return cls


def pod_spec(workload: Obj) -> Obj:
    spec: Obj = workload["spec"]["template"]["spec"]
    return spec


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_is_hardened(overlays: dict[str, Manifests], overlay: str) -> None:
    problems = []
    for w in overlays[overlay].workloads():
        name, pod = w["metadata"]["name"], pod_spec(w)
        ctx = pod.get("securityContext", {})
        if ctx.get("runAsNonRoot") is not True or not ctx.get("runAsUser"):
            problems.append(f"{name}: pod must set runAsNonRoot and a non-zero runAsUser")
        if ctx.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            problems.append(f"{name}: seccompProfile RuntimeDefault")
        if pod.get("automountServiceAccountToken") is not False:
            problems.append(f"{name}: automountServiceAccountToken must be false")
        sa = overlays[overlay].get("ServiceAccount", pod.get("serviceAccountName", "default"))
        if sa.get("automountServiceAccountToken") is not False:
            problems.append(f"{name}: its ServiceAccount must not mount a token either")
        for c in containers(w):
            sc = c.get("securityContext", {})
            if sc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{name}/{c['name']}: readOnlyRootFilesystem")
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{name}/{c['name']}: allowPrivilegeEscalation false")
            if sc.get("capabilities", {}).get("drop") != ["ALL"] or sc.get("capabilities", {}).get("add"):
                problems.append(f"{name}/{c['name']}: drop ALL capabilities and add none")
            if sc.get("privileged"):
                problems.append(f"{name}/{c['name']}: privileged")
            resources = c.get("resources", {})
            for kind in ("requests", "limits"):
                if set(resources.get(kind, {})) < {"cpu", "memory"}:
                    problems.append(f"{name}/{c['name']}: {kind} for cpu and memory")
            for probe in ("readinessProbe", "livenessProbe"):
                if probe not in c:
                    problems.append(f"{name}/{c['name']}: {probe}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_namespace_enforces_restricted_pod_security(overlays: dict[str, Manifests], overlay: str) -> None:
    labels = overlays[overlay].get("Namespace", "choreo")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert {
        o["metadata"].get("namespace") for o in overlays[overlay].objects if o["kind"] != "Namespace"
    } == {"choreo"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_is_isolated_by_network_policies(overlays: dict[str, Manifests], overlay: str) -> None:
    policies = overlays[overlay].of_kind("NetworkPolicy")
    deny = next(p for p in policies if p["spec"]["podSelector"] == {})
    assert set(deny["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny["spec"] and "egress" not in deny["spec"], "default-deny allows nothing"
    for w in overlays[overlay].workloads():
        labels = w["spec"]["template"]["metadata"]["labels"]
        own = [
            p
            for p in policies
            if p["spec"]["podSelector"] and selector_matches(p["spec"]["podSelector"], labels)
        ]
        assert own, f"{w['metadata']['name']} has no NetworkPolicy of its own"


def _egress_ports(overlay: Manifests, app: str, policy_name: str | None = None) -> set[tuple[str, int]]:
    """(peer app, 'kube-dns' or an ipBlock CIDR, port) pairs a NetworkPolicy lets the pods connect to."""
    policy = overlay.get("NetworkPolicy", policy_name or app)
    allowed = set()
    for rule in policy["spec"].get("egress", []):
        for peer in rule["to"]:
            if "ipBlock" in peer:
                target = peer["ipBlock"]["cidr"]
                assert not peer["ipBlock"].get("except"), peer
            else:
                labels = peer["podSelector"]["matchLabels"]
                target = labels.get("app.kubernetes.io/name") or labels.get("k8s-app")
            allowed |= {(target, p["port"]) for p in rule["ports"]}
    return allowed


@pytest.mark.parametrize("service", SERVICES)
def test_services_reach_only_nats_their_database_and_dns(
    overlays: dict[str, Manifests], service: str
) -> None:
    overlay = overlays["prod"]
    # The gateway's read model is a file in its pod: it reaches no database server.
    database = {("postgres", 5432)} if service in DATABASES else set()
    # notification's emails leave for the operator's SMTP relay, outside the cluster.
    smtp = (
        {(cidr, p) for cidr in ("0.0.0.0/0", "::/0") for p in SMTP_PORTS}
        if service == "notification"
        else set()
    )
    assert _egress_ports(overlay, service) == {("nats", 4222), ("kube-dns", 53)} | database | smtp
    ingress = overlay.get("NetworkPolicy", service)["spec"].get("ingress", [])
    if service == "gateway":
        assert [sorted(p["port"] for p in rule["ports"]) for rule in ingress] == [["grpc", "http"]]
        assert all("from" not in rule for rule in ingress), "the gateway is public"
    else:
        assert ingress == [], f"{service} accepts no connection"
    pod_labels = overlay.get("Deployment", service)["spec"]["template"]["metadata"]["labels"]
    # The NATS and PostgreSQL policies admit clients by these labels.
    assert pod_labels["nats.choreo.io/client"] == "true"
    assert pod_labels.get("postgres.choreo.io/client") == ("true" if service in DATABASES else None)


def _env(overlay: Manifests, service: str) -> dict[str, Any]:
    return dict(overlay.settings_env(overlay.get("Deployment", service)))


@pytest.mark.parametrize("overlay_name", OVERLAYS)
@pytest.mark.parametrize("service", SERVICES)
def test_deployment_runs_the_service_package(
    overlays: dict[str, Manifests], overlay_name: str, service: str
) -> None:
    deployment = overlays[overlay_name].get("Deployment", service)
    container = only_container(deployment)
    assert container["command"] == ["python", "-m", service]
    assert (REPO / service / "__main__.py").exists(), f"python -m {service} needs {service}/__main__.py"
    image_user = parse(REPO / "Dockerfile")[-1].args("USER")[-1]
    ctx = pod_spec(deployment)["securityContext"]
    assert f"{ctx['runAsUser']}:{ctx['runAsGroup']}" == image_user, "the pod's uid/gid is the image's"
    tmp = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert tmp and any(
        v["name"] == tmp[0]["name"] and "emptyDir" in v for v in pod_spec(deployment)["volumes"]
    ), "an emptyDir on /tmp (the only writable place)"


@pytest.mark.parametrize("overlay_name", OVERLAYS)
@pytest.mark.parametrize("service", SERVICES)
def test_credentials_are_files_readable_by_the_pod_only(
    overlays: dict[str, Manifests], overlay_name: str, service: str
) -> None:
    rendered = overlays[overlay_name]
    deployment = rendered.get("Deployment", service)
    env = only_container(deployment).get("env", [])
    assert not [v["name"] for v in env if "secretKeyRef" in v.get("valueFrom", {})], (
        f"{service}: Secrets are mounted as files (CHOREO_SECRETS_DIR), not passed as variables"
    )
    volume = rendered.secret_volume(deployment)
    assert volume is not None, f"{service}: no CHOREO_SECRETS_DIR"
    prefix = service.upper() + "_"
    assert all(name.startswith(prefix) for name in volume.files), volume.files
    projected = next(v for v in pod_spec(deployment)["volumes"] if v["name"] == volume.name)["projected"]
    # Owner root, group the pod's fsGroup: readable by the service's uid/gid, by nobody else.
    assert projected.get("defaultMode") == 0o440
    ctx = pod_spec(deployment)["securityContext"]
    assert ctx.get("fsGroup") == ctx["runAsGroup"]


@pytest.mark.parametrize("overlay_name", OVERLAYS)
@pytest.mark.parametrize("service", SERVICES)
def test_configuration_names_real_settings(
    overlays: dict[str, Manifests], overlay_name: str, service: str, tmp_path: Path
) -> None:
    # A variable of the service's prefix that names no setting stops it at start-up: caught here first.
    cls = settings_class(service)
    prefix = str(cls.model_config.get("env_prefix", ""))
    env = _env(overlays[overlay_name], service)
    if overlay_name == "prod":
        operator = OPERATOR_SETTINGS.get(service, {})
        assert not set(operator) & set(env), f"prod sets {set(operator) & set(env)}, which are the operator's"
        env.update(operator)
    unknown = unknown_variables(cls, {name: "" for name in env})
    assert not unknown, f"{service}: {unknown}"
    # Every value is valid for the settings (secrets replaced by placeholders of the right form).
    values = {k: ("secret" if isinstance(v, SecretRef) else v) for k, v in env.items()}
    for key in values:
        if key.endswith("_URL") and isinstance(env[key], SecretRef):
            values[key] = "sqlite+aiosqlite:///:memory:"
        elif key in TOKEN_KEY_ENV and isinstance(env[key], SecretRef):
            values[key] = TOKEN_KEY_ENV[key]  # a key of the right form (choreo.sealing)
        elif key.endswith("_FILE"):
            # A file mounted in the pod (a certificate): the settings check that it can be read.
            values[key] = str(tmp_path / "mounted")
            (tmp_path / "mounted").touch()
    settings = cls.model_validate({k[len(prefix) :].lower(): v for k, v in values.items()})
    assert isinstance(env[f"{prefix}NATS_PASSWORD"], SecretRef), (
        f"{prefix}NATS_PASSWORD must come from a Secret"
    )
    if service in DATABASES:
        assert isinstance(env[f"{prefix}DATABASE_URL"], SecretRef), "a database URL holds a password"
    else:
        # A file in the pod (test_read_model.py), no credential: configuration, not a Secret.
        assert str(env[f"{prefix}DATABASE_URL"]).startswith("sqlite+aiosqlite:///")
    assert settings.model_dump()["log_format"] == "json"


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("service", SERVICES)
def test_no_service_links_in_the_environment(
    overlays: dict[str, Manifests], overlay: str, service: str
) -> None:
    # Kubernetes would set BOOKING_PORT, GATEWAY_SERVICE_HOST... for the namespace's Services (named
    # like the services): variables of a service's prefix that are not its settings stop it.
    deployment = overlays[overlay].get("Deployment", service)
    assert pod_spec(deployment).get("enableServiceLinks") is False, f"{service}: enableServiceLinks: false"


@pytest.mark.parametrize("overlay_name", OVERLAYS)
@pytest.mark.parametrize("service", SERVICES)
def test_probed_ports_are_the_ports_the_service_binds(
    overlays: dict[str, Manifests], overlay_name: str, service: str
) -> None:
    container = only_container(overlays[overlay_name].get("Deployment", service))
    env = _env(overlays[overlay_name], service)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    prefix = service.upper() + "_"
    if service == "gateway" and prefix + "TLS_CERT_FILE" in env:
        # TLS (prod): the kubelet's gRPC probe cannot speak it, so every probe is HTTPS.
        assert {"grpc": int(env[prefix + "GRPC_PORT"]), "http": int(env[prefix + "HTTP_PORT"])} == ports
        https = {"port": "http", "scheme": "HTTPS"}
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", **https}
        assert container["startupProbe"]["httpGet"] == {"path": "/readyz", **https}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", **https}
    elif service == "gateway":
        assert {"grpc": int(env[prefix + "GRPC_PORT"]), "http": int(env[prefix + "HTTP_PORT"])} == ports
        assert container["livenessProbe"]["grpc"]["port"] == ports["grpc"]
        assert container["startupProbe"]["grpc"]["port"] == ports["grpc"]
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    else:
        assert {"health": int(env[prefix + "HEALTH_PORT"])} == ports
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
        assert env[prefix + "HEALTH_HOST"] == "0.0.0.0", "the kubelet probes the pod IP"


@pytest.mark.parametrize("overlay_name", OVERLAYS)
@pytest.mark.parametrize("service", SERVICES)
def test_grace_period_covers_the_graceful_drain(
    overlays: dict[str, Manifests], overlay_name: str, service: str
) -> None:
    deployment = overlays[overlay_name].get("Deployment", service)
    grace = float(_env(overlays[overlay_name], service)[f"{service.upper()}_SHUTDOWN_GRACE_SECONDS"])
    pre_stop = (
        only_container(deployment).get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    )
    period = pod_spec(deployment)["terminationGracePeriodSeconds"]
    low, high = grace + pre_stop + EXIT_MARGIN[0], grace + pre_stop + EXIT_MARGIN[1]
    assert low <= period <= high, (
        f"{service}: {period}s, expected {low}-{high}s (grace {grace} + preStop {pre_stop})"
    )


@pytest.mark.parametrize("overlay_name", OVERLAYS)
def test_the_services_are_every_deployment(overlays: dict[str, Manifests], overlay_name: str) -> None:
    """A Deployment added to the manifests is a service of the tests' list (or dev's mail sink),
    so every check parametrized by service covers it."""
    names = {d["metadata"]["name"] for d in overlays[overlay_name].of_kind("Deployment")}
    extra = set(DEV_ONLY) if overlay_name == "dev" else set()
    assert names == set(SERVICES) | extra


def test_notification_reaches_the_smtp_relay_it_is_given(overlays: dict[str, Manifests]) -> None:
    """Prod: the relay is the operator's (unset until set: the service refuses to start), on a
    port the NetworkPolicy opens. Dev: the mail sink, over the dev policy's own rule, as the sink's
    Service and container serve it."""
    prod_env, dev_env = _env(overlays["prod"], "notification"), _env(overlays["dev"], "notification")
    assert "NOTIFICATION_SMTP_HOST" not in prod_env and "NOTIFICATION_MAIL_FROM" not in prod_env
    assert int(prod_env["NOTIFICATION_SMTP_PORT"]) in SMTP_PORTS
    assert prod_env["NOTIFICATION_SMTP_SECURITY"] in ("starttls", "tls"), "no plain SMTP to a relay"
    # The relay's login comes from a Secret, as files; the dev sink takes mail without one.
    assert {
        k: v for k, v in prod_env.items() if k.startswith("NOTIFICATION_SMTP_") and isinstance(v, SecretRef)
    } == {
        "NOTIFICATION_SMTP_USERNAME": SecretRef("notification-smtp", "username"),
        "NOTIFICATION_SMTP_PASSWORD": SecretRef("notification-smtp", "password"),
    }
    assert not [k for k in dev_env if k in ("NOTIFICATION_SMTP_USERNAME", "NOTIFICATION_SMTP_PASSWORD")]
    dev = overlays["dev"]
    service = dev.get("Service", str(dev_env["NOTIFICATION_SMTP_HOST"]))
    port = int(dev_env["NOTIFICATION_SMTP_PORT"])
    assert dev_env["NOTIFICATION_SMTP_SECURITY"] == "none", "the sink speaks plain SMTP"
    (served,) = [p for p in service["spec"]["ports"] if p["port"] == port]
    sink = dev.get("Deployment", "mail-sink")
    assert selector_matches(
        {"matchLabels": service["spec"]["selector"]}, sink["spec"]["template"]["metadata"]["labels"]
    )
    container_ports = {p["name"]: p["containerPort"] for p in only_container(sink)["ports"]}
    assert container_ports[served["targetPort"]] == port
    assert f"0.0.0.0:{port}" in only_container(sink)["command"], "the sink listens where the Service sends"
    assert ("mail-sink", port) in _egress_ports(dev, "notification", "notification-mail-sink")
    ingress = dev.get("NetworkPolicy", "mail-sink")["spec"]["ingress"]
    assert ingress == [
        {
            "from": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "notification"}}}],
            "ports": [{"port": served["targetPort"], "protocol": "TCP"}],
        }
    ]
    assert dev.get("NetworkPolicy", "mail-sink")["spec"]["egress"] == []
    assert overlays["prod"].find("Deployment", "mail-sink") is None, "the mail sink is for dev only"


def test_documented_egress_patch_narrows_smtp_to_the_relay(kubectl: str, tmp_path: Path) -> None:
    """docs/kubernetes.md ("Email") shows how to narrow notification's SMTP egress to one relay:
    that patch, applied over the prod overlay, replaces the any-address rule and nothing else."""
    doc = (REPO / "docs" / "kubernetes.md").read_text()
    example = re.search(r"for a relay at ([\d.]+) on (\d+):\n\n```yaml\n(.*?)```", doc, re.DOTALL)
    assert example, "the Email section's example patch"
    relay, port, patches = example.groups()
    overlay = tmp_path / "narrowed"
    overlay.mkdir()
    prod = os.path.relpath(REPO / "k8s" / "overlays" / "prod", overlay)
    (overlay / "kustomization.yaml").write_text(f"resources:\n  - {prod}\n{patches}")
    narrowed = Manifests(render(kubectl, overlay))
    assert _egress_ports(narrowed, "notification") == {
        ("nats", 4222),
        ("postgres", 5432),
        ("kube-dns", 53),
        (f"{relay}/32", int(port)),
    }


def test_prod_scales_and_spreads_the_stateless_services(overlays: dict[str, Manifests]) -> None:
    prod = overlays["prod"]
    hpas = {h["spec"]["scaleTargetRef"]["name"]: h for h in prod.of_kind("HorizontalPodAutoscaler")}
    assert set(hpas) == set(SERVICES), "an HPA for each stateless service, none for NATS or PostgreSQL"
    pdbs = {p["metadata"]["name"] for p in prod.of_kind("PodDisruptionBudget")}
    assert pdbs == {*SERVICES, "nats"}
    for service in SERVICES:
        assert hpas[service]["spec"]["minReplicas"] >= 2
        deployment = prod.get("Deployment", service)
        assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
        keys = {c["topologyKey"] for c in pod_spec(deployment)["topologySpreadConstraints"]}
        assert keys == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
    dev = overlays["dev"]
    assert not dev.of_kind("HorizontalPodAutoscaler") and not dev.of_kind("PodDisruptionBudget")
