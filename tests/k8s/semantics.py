"""Checks a real API server or a running cluster would make, on rendered objects.

Schema validation (kubernetes-validate) proves each object has the right shape;
these catch what only shows once objects meet each other or the API server's
own validation: names, selectors that select nothing, references to objects
that do not exist, probes on ports no container has. Each check returns
human-readable problems; an empty list means the objects are consistent.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from tests.k8s.manifests import WORKLOAD_KINDS, Obj

# Kubernetes' own validation rules (k8s.io/apimachinery/pkg/util/validation).
_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_DNS1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_LABEL_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_IANA_SVC_NAME = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?")
_ENV_NAME = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]*")

#: Kinds whose name must be a DNS-1035 label (stricter than a subdomain).
_DNS1035_KINDS = ("Service",)
#: Kinds whose name must be a DNS-1123 label.
_DNS1123_LABEL_KINDS = ("Namespace", "StatefulSet")
_CLUSTER_SCOPED = ("Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume", "StorageClass")
PULL_POLICIES = ("Always", "IfNotPresent", "Never")


def _name(obj: Obj) -> str:
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


def _pod_spec(obj: Obj) -> Obj:
    return dict(obj["spec"]["template"]["spec"])


def _pod_labels(obj: Obj) -> dict[str, str]:
    return dict(obj["spec"]["template"].get("metadata", {}).get("labels", {}))


def _all_containers(pod: Obj) -> Iterator[Obj]:
    yield from pod.get("initContainers", [])
    yield from pod.get("containers", [])


def selector_matches(selector: Obj | None, labels: dict[str, str]) -> bool:
    """Whether a LabelSelector (matchLabels + matchExpressions) selects these labels."""
    if selector is None:
        return False
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def _valid_label_key(key: str) -> bool:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _DNS1123_SUBDOMAIN.fullmatch(prefix)):
        return False
    return len(name) <= 63 and bool(_LABEL_NAME.fullmatch(name))


def _valid_label_value(value: str) -> bool:
    return value == "" or (len(value) <= 63 and bool(_LABEL_NAME.fullmatch(value)))


def _valid_port_name(name: str) -> bool:
    return (
        len(name) <= 15
        and bool(_IANA_SVC_NAME.fullmatch(name))
        and "--" not in name
        and any(c.isalpha() for c in name)
    )


def check_names(objects: list[Obj]) -> list[str]:
    """Object names, namespaces, labels, and uniqueness of kind/namespace/name."""
    problems = []
    seen: set[tuple[str, str, str]] = set()
    for obj in objects:
        meta = obj.get("metadata", {})
        kind, name = obj.get("kind", ""), meta.get("name", "")
        if kind in _DNS1035_KINDS:
            ok = len(name) <= 63 and bool(_DNS1035_LABEL.fullmatch(name))
        elif kind in _DNS1123_LABEL_KINDS:
            ok = len(name) <= 63 and bool(_DNS1123_LABEL.fullmatch(name))
        else:
            ok = len(name) <= 253 and bool(_DNS1123_SUBDOMAIN.fullmatch(name))
        if not ok:
            problems.append(f"{_name(obj)}: invalid name {name!r}")
        if kind not in _CLUSTER_SCOPED and not meta.get("namespace"):
            problems.append(f"{_name(obj)}: no namespace (it would land in the kubectl context's)")
        key = (kind, meta.get("namespace", ""), name)
        if key in seen:
            problems.append(f"{_name(obj)}: defined twice")
        seen.add(key)
        label_sets = [meta.get("labels", {})]
        if kind in WORKLOAD_KINDS:
            label_sets.append(_pod_labels(obj))
        for labels in label_sets:
            for k, v in labels.items():
                if not _valid_label_key(k) or not _valid_label_value(str(v)):
                    problems.append(f"{_name(obj)}: invalid label {k}={v!r}")
    return problems


def check_workloads(objects: list[Obj]) -> list[str]:
    """Selectors, containers, ports, probes, images, env and volumes of every workload."""
    problems = []
    for obj in objects:
        if obj.get("kind") not in WORKLOAD_KINDS:
            continue
        where = _name(obj)
        if not selector_matches(obj["spec"].get("selector"), _pod_labels(obj)):
            problems.append(f"{where}: spec.selector does not match the pod template's labels")
        pod = _pod_spec(obj)
        volumes = {v["name"] for v in pod.get("volumes", [])}
        volumes |= {t["metadata"]["name"] for t in obj["spec"].get("volumeClaimTemplates", [])}
        names: set[str] = set()
        for c in _all_containers(pod):
            problems += _check_container(f"{where} container {c.get('name')}", c, volumes)
            if not _DNS1123_LABEL.fullmatch(c.get("name", "")):
                problems.append(f"{where}: invalid container name {c.get('name')!r}")
            if c.get("name") in names:
                problems.append(f"{where}: two containers named {c.get('name')}")
            names.add(c.get("name", ""))
        host_ports = [
            (p["containerPort"], p.get("protocol", "TCP"))
            for c in pod["containers"]
            for p in c.get("ports", [])
        ]
        if len(host_ports) != len(set(host_ports)):
            problems.append(f"{where}: two containers of the pod declare the same port")
    return problems


def _check_container(where: str, c: Obj, volumes: set[str]) -> list[str]:
    problems = []
    image = c.get("image", "")
    tag = image.rsplit("/", 1)[-1]
    if "@sha256:" not in image and (":" not in tag or tag.endswith(":latest")):
        problems.append(f"{where}: image {image!r} has no fixed tag")
    if c.get("imagePullPolicy") not in PULL_POLICIES:
        problems.append(f"{where}: imagePullPolicy {c.get('imagePullPolicy')!r} not in {PULL_POLICIES}")
    ports: dict[str, int] = {}
    numbers: set[int] = set()
    for p in c.get("ports", []):
        number = p.get("containerPort")
        if not isinstance(number, int) or not 1 <= number <= 65535:
            problems.append(f"{where}: containerPort {number!r} out of range 1-65535")
        if p.get("protocol", "TCP") not in ("TCP", "UDP", "SCTP"):
            problems.append(f"{where}: port protocol {p.get('protocol')!r}")
        if "name" in p:
            if not _valid_port_name(p["name"]):
                problems.append(f"{where}: invalid port name {p['name']!r} (IANA service name)")
            if p["name"] in ports:
                problems.append(f"{where}: port name {p['name']!r} used twice")
            ports[p["name"]] = number
        numbers.add(number)
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = c.get(kind)
        if probe is not None:
            problems += _check_probe(f"{where} {kind}", probe, ports, numbers)
    seen_env: set[str] = set()
    for var in c.get("env", []):
        if not _ENV_NAME.fullmatch(var["name"]):
            problems.append(f"{where}: invalid env name {var['name']!r}")
        if var["name"] in seen_env:
            problems.append(f"{where}: env {var['name']} set twice")
        seen_env.add(var["name"])
    for mount in c.get("volumeMounts", []):
        if mount["name"] not in volumes:
            problems.append(f"{where}: mounts volume {mount['name']!r} that the pod does not declare")
    return problems


def _check_probe(where: str, probe: Obj, ports: dict[str, int], numbers: set[int]) -> list[str]:
    handlers = [k for k in ("httpGet", "tcpSocket", "grpc", "exec") if k in probe]
    if len(handlers) != 1:
        return [f"{where}: needs exactly one handler, has {handlers}"]
    handler = handlers[0]
    if handler == "exec":
        return [] if probe["exec"].get("command") else [f"{where}: empty exec command"]
    port = probe[handler].get("port")
    if isinstance(port, str):
        if port not in ports:
            return [f"{where}: port name {port!r} is not a port of the container ({sorted(ports)})"]
    elif port not in numbers:
        return [f"{where}: port {port} is not a containerPort ({sorted(numbers)})"]
    if handler == "httpGet" and not str(probe["httpGet"].get("path", "/")).startswith("/"):
        return [f"{where}: HTTP path must start with /"]
    return []


def check_references(objects: list[Obj], provided: frozenset[tuple[str, str]] = frozenset()) -> list[str]:
    """ConfigMaps, Secrets, ServiceAccounts and keys the pods refer to exist (unless optional).

    Args:
        objects: The rendered objects.
        provided: ``(kind, name)`` of objects the user creates outside the manifests
            (the prod overlay's Secrets); references to them are not problems.
    """
    problems = []
    index: dict[tuple[str, str, str], Obj] = {
        (o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]): o for o in objects
    }

    def look(where: str, kind: str, ns: str, name: str, key: str | None, optional: bool) -> None:
        target = index.get((kind, ns, name))
        if target is None:
            if not optional and (kind, name) not in provided:
                problems.append(f"{where}: refers to {kind} {name!r}, which is not defined")
            return
        if key is not None:
            keys = set(target.get("data", {})) | set(target.get("stringData", {}))
            keys |= set(target.get("binaryData", {}))
            if key not in keys and not optional:
                problems.append(f"{where}: {kind} {name!r} has no key {key!r}")

    for obj in objects:
        if obj.get("kind") not in WORKLOAD_KINDS:
            continue
        ns, where, pod = obj["metadata"].get("namespace", ""), _name(obj), _pod_spec(obj)
        look(where, "ServiceAccount", ns, pod.get("serviceAccountName", "default"), None, False)
        for c in _all_containers(pod):
            for source in c.get("envFrom", []):
                for field, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
                    if field in source:
                        ref = source[field]
                        look(where, kind, ns, ref["name"], None, ref.get("optional", False))
            for var in c.get("env", []):
                for field, kind in (("configMapKeyRef", "ConfigMap"), ("secretKeyRef", "Secret")):
                    ref = var.get("valueFrom", {}).get(field)
                    if ref is not None:
                        look(where, kind, ns, ref["name"], ref["key"], ref.get("optional", False))
        for vol in pod.get("volumes", []):
            if "configMap" in vol:
                ref = vol["configMap"]
                look(where, "ConfigMap", ns, ref["name"], None, ref.get("optional", False))
            if "secret" in vol:
                ref = vol["secret"]
                look(where, "Secret", ns, ref["secretName"], None, ref.get("optional", False))
            for source in vol.get("projected", {}).get("sources", []):
                for field, kind in (("configMap", "ConfigMap"), ("secret", "Secret")):
                    if field in source:
                        ref = source[field]
                        keys = [item["key"] for item in ref.get("items", [])] or [None]
                        for key in keys:
                            look(where, kind, ns, ref["name"], key, ref.get("optional", False))
    return problems


def _pods(objects: list[Obj]) -> list[tuple[Obj, dict[str, str]]]:
    return [(o, _pod_labels(o)) for o in objects if o.get("kind") in WORKLOAD_KINDS]


def check_services(objects: list[Obj]) -> list[str]:
    """Services select pods and target their ports; StatefulSets name a headless Service."""
    problems = []
    pods = _pods(objects)
    services = {
        (s["metadata"].get("namespace", ""), s["metadata"]["name"]): s
        for s in objects
        if s["kind"] == "Service"
    }
    for (ns, _), svc in services.items():
        where = _name(svc)
        selector = svc["spec"].get("selector")
        if not selector:
            problems.append(f"{where}: no selector (choreo defines no manual Endpoints)")
            continue
        selected = [
            w
            for w, labels in pods
            if w["metadata"].get("namespace", "") == ns
            and all(labels.get(k) == v for k, v in selector.items())
        ]
        if not selected:
            problems.append(f"{where}: selector {selector} selects no pod")
        for port in svc["spec"].get("ports", []):
            number = port.get("port")
            if not isinstance(number, int) or not 1 <= number <= 65535:
                problems.append(f"{where}: port {number!r} out of range")
            if len(svc["spec"]["ports"]) > 1 and "name" not in port:
                problems.append(f"{where}: ports must be named when there are several")
            if "name" in port and not _valid_port_name(port["name"]):
                problems.append(f"{where}: invalid port name {port['name']!r}")
            target = port.get("targetPort", number)
            for w in selected:
                declared = [p for c in _pod_spec(w)["containers"] for p in c.get("ports", [])]
                if isinstance(target, str):
                    ok = any(p.get("name") == target for p in declared)
                else:
                    ok = any(p["containerPort"] == target for p in declared)
                if not ok:
                    problems.append(f"{where}: targetPort {target!r} is not a port of {_name(w)}")
    for obj in objects:
        if obj.get("kind") != "StatefulSet":
            continue
        ns = obj["metadata"].get("namespace", "")
        headless = services.get((ns, obj["spec"].get("serviceName", "")))
        if headless is None:
            problems.append(f"{_name(obj)}: serviceName {obj['spec'].get('serviceName')!r} is not a Service")
        elif headless["spec"].get("clusterIP") != "None":
            problems.append(f"{_name(obj)}: serviceName {headless['metadata']['name']!r} is not headless")
        elif not all(_pod_labels(obj).get(k) == v for k, v in headless["spec"].get("selector", {}).items()):
            problems.append(f"{_name(obj)}: its headless Service does not select its pods")
    return problems


def check_policies(objects: list[Obj]) -> list[str]:
    """NetworkPolicies, PodDisruptionBudgets and HPAs point at pods that exist."""
    problems = []
    pods = _pods(objects)

    def selects_some(selector: Obj, ns: str) -> bool:
        return any(
            w["metadata"].get("namespace", "") == ns and selector_matches(selector, lb) for w, lb in pods
        )

    for obj in objects:
        kind, ns, where = obj.get("kind"), obj["metadata"].get("namespace", ""), _name(obj)
        if kind == "NetworkPolicy":
            spec = obj["spec"]
            if spec.get("podSelector") and not selects_some(spec["podSelector"], ns):
                problems.append(f"{where}: podSelector selects no pod")
            for rule in spec.get("ingress", []) + spec.get("egress", []):
                for peer in rule.get("from", []) + rule.get("to", []):
                    # A peer with a namespaceSelector points outside (kube-dns); only same-namespace
                    # pod selectors can be checked here.
                    outside = "namespaceSelector" in peer
                    if "podSelector" in peer and not outside and not selects_some(peer["podSelector"], ns):
                        problems.append(f"{where}: peer {peer['podSelector']} selects no pod")
                for port in rule.get("ports", []):
                    value = port.get("port")
                    if isinstance(value, int) and not 1 <= value <= 65535:
                        problems.append(f"{where}: port {value} out of range")
        elif kind == "PodDisruptionBudget":
            if not selects_some(obj["spec"].get("selector", {}), ns):
                problems.append(f"{where}: selector selects no pod")
        elif kind == "HorizontalPodAutoscaler":
            ref = obj["spec"]["scaleTargetRef"]
            target = next(
                (
                    w
                    for w, _ in pods
                    if w["kind"] == ref["kind"]
                    and w["metadata"]["name"] == ref["name"]
                    and w["metadata"].get("namespace", "") == ns
                ),
                None,
            )
            if target is None:
                problems.append(f"{where}: scaleTargetRef {ref['kind']}/{ref['name']} does not exist")
                continue
            for metric in obj["spec"].get("metrics", []):
                resource = metric.get("resource", {}).get("name")
                if resource and any(
                    resource not in c.get("resources", {}).get("requests", {})
                    for c in _pod_spec(target)["containers"]
                ):
                    problems.append(
                        f"{where}: {resource} utilization needs {resource} requests on every container"
                    )
            if obj["spec"].get("minReplicas", 1) > obj["spec"]["maxReplicas"]:
                problems.append(f"{where}: minReplicas > maxReplicas")
    return problems


def check_all(objects: list[Obj], provided: frozenset[tuple[str, str]] = frozenset()) -> list[str]:
    """Every check above; ``provided`` as for ``check_references``."""
    problems = check_names(objects) + check_workloads(objects) + check_references(objects, provided)
    return problems + check_services(objects) + check_policies(objects)
