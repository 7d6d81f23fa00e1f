"""What an API server or a running cluster would reject or silently ignore.

The first tests run the checks on the overlays; the others break one thing in a
copy of the dev overlay and show that the check notices, so a check that can
never fail would be caught here.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest

from tests.k8s.certmanager import certificate_secrets
from tests.k8s.docs import prod_secrets
from tests.k8s.manifests import Manifests, Obj
from tests.k8s.semantics import check_all, selector_matches


def test_dev_overlay_is_consistent(overlays: dict[str, Manifests]) -> None:
    assert check_all(overlays["dev"].objects) == []


def test_prod_overlay_is_consistent_given_the_documented_secrets(overlays: dict[str, Manifests]) -> None:
    # The user creates the documented Secrets; cert-manager writes one per Certificate.
    made = certificate_secrets(overlays["prod"].objects)
    provided = frozenset(("Secret", name) for name in {*prod_secrets(), *made})
    assert check_all(overlays["prod"].objects, provided) == []


def test_prod_needs_exactly_the_documented_secrets(overlays: dict[str, Manifests]) -> None:
    # Without the documented Secrets, every missing one is reported, and nothing else.
    problems = check_all(overlays["prod"].objects)
    missing = {p.split("'")[1] for p in problems if "refers to Secret" in p}
    assert all("refers to Secret" in p for p in problems), problems
    assert missing == set(prod_secrets()) | certificate_secrets(overlays["prod"].objects, leaves_only=True)
    assert not overlays["prod"].of_kind("Secret"), "prod must ship no Secret"


def _first(objects: list[Obj], kind: str, name: str) -> Obj:
    return next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name)


def _pod(objects: list[Obj], kind: str, name: str) -> Obj:
    pod: Obj = _first(objects, kind, name)["spec"]["template"]["spec"]
    return pod


def _container(objects: list[Obj], kind: str, name: str) -> Obj:
    container: Obj = _pod(objects, kind, name)["containers"][0]
    return container


def break_selector(objs: list[Obj]) -> None:
    _first(objs, "Deployment", "booking")["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] = (
        "bookings"
    )


def break_service_selector(objs: list[Obj]) -> None:
    _first(objs, "Service", "payment")["spec"]["selector"] = {"app.kubernetes.io/name": "paymnt"}


def break_target_port(objs: list[Obj]) -> None:
    _first(objs, "Service", "gateway")["spec"]["ports"][0]["targetPort"] = "grcp"


def break_headless(objs: list[Obj]) -> None:
    _first(objs, "Service", "nats-headless")["spec"].pop("clusterIP")


def break_service_name(objs: list[Obj]) -> None:
    _first(objs, "StatefulSet", "nats")["spec"]["serviceName"] = "nats-peers"


def break_config_ref(objs: list[Obj]) -> None:
    _container(objs, "Deployment", "booking")["envFrom"][0]["configMapRef"]["name"] = "booking-settings"


def break_secret_key(objs: list[Obj]) -> None:
    env = _container(objs, "StatefulSet", "postgres")["env"]
    next(v for v in env if "secretKeyRef" in v.get("valueFrom", {}))["valueFrom"]["secretKeyRef"]["key"] = (
        "passwd"
    )


def _projected_secrets(objs: list[Obj]) -> list[Obj]:
    volume = next(v for v in _pod(objs, "Deployment", "payment")["volumes"] if "projected" in v)
    return [s["secret"] for s in volume["projected"]["sources"]]


def break_projected_key(objs: list[Obj]) -> None:
    _projected_secrets(objs)[-1]["items"][-1]["key"] = "ledger_url"


def break_projected_secret(objs: list[Obj]) -> None:
    _projected_secrets(objs)[0]["name"] = "payment-nats-creds"


def break_service_account(objs: list[Obj]) -> None:
    _pod(objs, "Deployment", "gateway")["serviceAccountName"] = "gateway-sa"


def break_probe_port(objs: list[Obj]) -> None:
    _container(objs, "Deployment", "booking")["readinessProbe"]["httpGet"]["port"] = "http"


def break_grpc_probe(objs: list[Obj]) -> None:
    _container(objs, "Deployment", "gateway")["livenessProbe"]["grpc"]["port"] = 50052


def break_pull_policy(objs: list[Obj]) -> None:
    _container(objs, "StatefulSet", "nats")["imagePullPolicy"] = "Sometimes"


def break_port_range(objs: list[Obj]) -> None:
    _container(objs, "StatefulSet", "postgres")["ports"][0]["containerPort"] = 70000


def break_port_name(objs: list[Obj]) -> None:
    _container(objs, "StatefulSet", "nats")["ports"][0]["name"] = "nats-client-port-x"


def break_name(objs: list[Obj]) -> None:
    _first(objs, "Service", "booking")["metadata"]["name"] = "Booking_svc"


def break_latest(objs: list[Obj]) -> None:
    _container(objs, "Deployment", "payment")["image"] = "choreo/payment:latest"


def break_mount(objs: list[Obj]) -> None:
    _container(objs, "Deployment", "payment")["volumeMounts"][0]["name"] = "scratch"


def break_policy_peer(objs: list[Obj]) -> None:
    _first(objs, "NetworkPolicy", "nats")["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"] = {
        "nats.choreo.io/clients": "true"
    }


def break_namespace(objs: list[Obj]) -> None:
    _first(objs, "ConfigMap", _first_name(objs, "ConfigMap"))["metadata"].pop("namespace")


def _first_name(objs: list[Obj], kind: str) -> str:
    return str(next(o for o in objs if o["kind"] == kind)["metadata"]["name"])


BREAKAGES: dict[str, tuple[Callable[[list[Obj]], None], str]] = {
    "selector": (break_selector, "does not match the pod template"),
    "service selector": (break_service_selector, "selects no pod"),
    "target port": (break_target_port, "targetPort 'grcp'"),
    "headless": (break_headless, "is not headless"),
    "serviceName": (break_service_name, "is not a Service"),
    "ConfigMap": (break_config_ref, "ConfigMap 'booking-settings'"),
    "Secret key": (break_secret_key, "has no key 'passwd'"),
    "projected Secret key": (break_projected_key, "has no key 'ledger_url'"),
    "projected Secret": (break_projected_secret, "Secret 'payment-nats-creds'"),
    "ServiceAccount": (break_service_account, "ServiceAccount 'gateway-sa'"),
    "probe port name": (break_probe_port, "port name 'http'"),
    "gRPC probe port": (break_grpc_probe, "port 50052"),
    "pull policy": (break_pull_policy, "imagePullPolicy 'Sometimes'"),
    "port range": (break_port_range, "out of range"),
    "port name": (break_port_name, "invalid port name"),
    "object name": (break_name, "invalid name 'Booking_svc'"),
    "latest tag": (break_latest, "no fixed tag"),
    "volume mount": (break_mount, "volume 'scratch'"),
    "policy peer": (break_policy_peer, "selects no pod"),
    "namespace": (break_namespace, "no namespace"),
}


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_a_broken_copy_is_caught(overlays: dict[str, Manifests], breakage: str) -> None:
    objects = copy.deepcopy(overlays["dev"].objects)
    mutate, expected = BREAKAGES[breakage]
    mutate(objects)
    problems = check_all(objects)
    assert any(expected in p for p in problems), problems


def test_selector_expressions() -> None:
    labels = {"app": "x", "tier": "web"}
    assert selector_matches({"matchExpressions": [{"key": "app", "operator": "In", "values": ["x"]}]}, labels)
    assert not selector_matches({"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}, labels)
    assert selector_matches({"matchLabels": {}}, labels)
    assert not selector_matches(None, labels)
