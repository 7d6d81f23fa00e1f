"""Rendering the kustomizations and looking things up in what they render."""

from __future__ import annotations

import base64
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
OVERLAYS = ("dev", "prod")

Obj = dict[str, Any]

#: The services the manifests deploy, each a package (``python -m <service>``), a Deployment, a
#: ConfigMap, a NetworkPolicy and a NATS user of its own; the gateway, which the tests reach
#: their pods through, last.
SERVICES = ("booking", "payment", "inventory", "notification", "analytics", "gateway")
#: Workloads of the dev overlay only that are no choreo service: the SMTP sink notification
#: sends to (k8s/overlays/dev/mail-sink).
DEV_ONLY = ("mail-sink",)

#: Kinds whose pods come from ``spec.template``.
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job")


def kustomization_dirs() -> list[Path]:
    """Every directory under k8s/ holding a Kustomization (components cannot render alone)."""
    found = []
    for path in sorted(K8S.rglob("kustomization.yaml")):
        doc = yaml.safe_load(path.read_text())
        if doc.get("kind", "Kustomization") == "Kustomization":
            found.append(path.parent)
    return found


def render(kubectl: str, directory: Path) -> list[Obj]:
    """``kubectl kustomize DIR`` as a list of objects; fails with kustomize's message."""
    result = subprocess.run(
        [kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=60, check=False
    )
    if result.returncode != 0:
        raise AssertionError(f"kubectl kustomize {directory} failed:\n{result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@dataclass(frozen=True)
class SecretRef:
    """An environment variable read from a Secret."""

    name: str
    key: str


@dataclass(frozen=True)
class FieldRef:
    """An environment variable read from the pod (downward API)."""

    path: str


EnvValue = str | SecretRef | FieldRef

#: Environment variable naming the directory of secret files (choreo/settings.py).
SECRETS_DIR_ENV = "CHOREO_SECRETS_DIR"


@dataclass(frozen=True)
class SecretVolume:
    """The projected Secret volume a service reads its credentials from."""

    #: Volume name in the pod spec.
    name: str
    #: Where the container mounts it (the value of CHOREO_SECRETS_DIR).
    mount_path: str
    #: File name (the setting's environment variable) -> the Secret key it holds.
    files: dict[str, SecretRef]


class Manifests:
    """The objects one kustomization renders, indexed by kind and name."""

    def __init__(self, objects: list[Obj]) -> None:
        self.objects = objects

    def of_kind(self, kind: str) -> list[Obj]:
        return [o for o in self.objects if o.get("kind") == kind]

    def find(self, kind: str, name: str) -> Obj | None:
        for obj in self.of_kind(kind):
            if obj["metadata"]["name"] == name:
                return obj
        return None

    def get(self, kind: str, name: str) -> Obj:
        obj = self.find(kind, name)
        if obj is None:
            raise AssertionError(f"no {kind} named {name!r} is rendered")
        return obj

    def workloads(self) -> Iterator[Obj]:
        for obj in self.objects:
            if obj.get("kind") in WORKLOAD_KINDS:
                yield obj

    def workload(self, name: str) -> Obj:
        for obj in self.workloads():
            if obj["metadata"]["name"] == name:
                return obj
        raise AssertionError(f"no workload named {name!r} is rendered")

    def container_env(self, container: Obj) -> dict[str, EnvValue]:
        """The container's environment as Kubernetes builds it: envFrom first, then env.

        ConfigMap values are resolved; Secret and downward-API values are left as references.
        """
        env: dict[str, EnvValue] = {}
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                data = self.get("ConfigMap", source["configMapRef"]["name"]).get("data", {})
                prefix = source.get("prefix", "")
                env.update({prefix + k: str(v) for k, v in data.items()})
            elif "secretRef" in source:
                raise AssertionError("envFrom secretRef is not used by choreo's manifests")
        for var in container.get("env", []):
            if "value" in var:
                env[var["name"]] = str(var["value"])
                continue
            ref = var["valueFrom"]
            if "secretKeyRef" in ref:
                env[var["name"]] = SecretRef(ref["secretKeyRef"]["name"], ref["secretKeyRef"]["key"])
            elif "configMapKeyRef" in ref:
                data = self.get("ConfigMap", ref["configMapKeyRef"]["name"]).get("data", {})
                env[var["name"]] = str(data[ref["configMapKeyRef"]["key"]])
            elif "fieldRef" in ref:
                env[var["name"]] = FieldRef(ref["fieldRef"]["fieldPath"])
            else:
                raise AssertionError(f"unsupported env source for {var['name']}: {ref}")
        return env

    def secret_volume(self, workload: Obj) -> SecretVolume | None:
        """The projected Secret volume CHOREO_SECRETS_DIR names, or None when it is not set.

        Fails when the variable names no mount, the mount is writable, or the volume is not
        a projected volume of Secret items (each file must be named, so that it matches a
        setting's environment variable).
        """
        container = only_container(workload)
        where = workload["metadata"]["name"]
        path = self.container_env(container).get(SECRETS_DIR_ENV)
        if path is None:
            return None
        assert isinstance(path, str), f"{where}: {SECRETS_DIR_ENV} must be a plain value"
        mounts = [m for m in container.get("volumeMounts", []) if m["mountPath"] == path]
        assert len(mounts) == 1, f"{where}: {SECRETS_DIR_ENV}={path} is not a mount path"
        assert mounts[0].get("readOnly") is True, f"{where}: the secret volume must be mounted read-only"
        volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"].get("volumes", [])}
        volume = volumes[mounts[0]["name"]]
        assert "projected" in volume, f"{where}: {volume['name']} is not a projected volume"
        files: dict[str, SecretRef] = {}
        for source in volume["projected"]["sources"]:
            assert set(source) == {"secret"}, f"{where}: only Secrets belong in {volume['name']}: {source}"
            assert source["secret"].get("items"), f"{where}: name each file of {source['secret']['name']}"
            for item in source["secret"]["items"]:
                assert item["path"] not in files, f"{where}: two sources write {item['path']}"
                files[item["path"]] = SecretRef(source["secret"]["name"], item["key"])
        return SecretVolume(volume["name"], path, files)

    def settings_env(self, workload: Obj) -> dict[str, EnvValue]:
        """What the settings of the workload's only container read: its environment, with
        CHOREO_SECRETS_DIR replaced by the files of the volume it names (as Secret references).

        A variable set both ways is refused: the environment would silently win.
        """
        env = self.container_env(only_container(workload))
        volume = self.secret_volume(workload)
        if volume is None:
            return env
        del env[SECRETS_DIR_ENV]
        both = sorted(set(env) & set(volume.files))
        assert not both, f"{workload['metadata']['name']}: {both} set as variable and as file"
        return {**env, **volume.files}

    def secret_value(self, ref: SecretRef) -> str | None:
        """The value of a rendered Secret's key, or None when the Secret is not rendered."""
        secret = self.find("Secret", ref.name)
        if secret is None:
            return None
        if ref.key in secret.get("stringData", {}):
            return str(secret["stringData"][ref.key])
        return base64.b64decode(secret["data"][ref.key]).decode()

    def configmap_file(self, base_name: str, key: str) -> str:
        """A file of a generated ConfigMap (its rendered name carries a hash suffix)."""
        for cm in self.of_kind("ConfigMap"):
            name = cm["metadata"]["name"]
            if (name == base_name or name.rsplit("-", 1)[0] == base_name) and key in cm.get("data", {}):
                return str(cm["data"][key])
        raise AssertionError(f"no ConfigMap {base_name} with key {key}")


def containers(workload: Obj) -> list[Obj]:
    return list(workload["spec"]["template"]["spec"]["containers"])


def only_container(workload: Obj) -> Obj:
    found = containers(workload)
    assert len(found) == 1, f"{workload['metadata']['name']} has {len(found)} containers"
    return found[0]


_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50}
_DECIMAL = {"k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15}


def quantity_bytes(quantity: str | int) -> int:
    """A storage or memory quantity (``8Gi``, ``500M``, ``1024``) in bytes."""
    text = str(quantity)
    for suffixes in (_BINARY, _DECIMAL):
        for suffix, factor in suffixes.items():
            if text.endswith(suffix):
                return int(float(text[: -len(suffix)]) * factor)
    return int(float(text))
