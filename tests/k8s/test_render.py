"""Every kustomization renders, and every rendered object is valid Kubernetes 1.32."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.k8s import certmanager, tools
from tests.k8s.manifests import K8S, SERVICES, Manifests, kustomization_dirs, render

kubernetes_validate = tools.import_module("kubernetes_validate", "pip install kubernetes-validate")

KUBERNETES_VERSION = "1.32.0"


@pytest.mark.parametrize("directory", kustomization_dirs(), ids=lambda p: str(p.relative_to(K8S)))
def test_kustomization_renders_valid_objects(kubectl: str, directory: Path) -> None:
    objects = render(kubectl, directory)
    assert objects, f"{directory} renders nothing"
    errors = []
    for obj in objects:
        try:
            if certmanager.is_cert_manager(obj):
                certmanager.validate(obj)
            else:
                kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except (kubernetes_validate.ValidationError, certmanager.jsonschema.ValidationError) as exc:
            errors.append(f"{obj['kind']}/{obj['metadata']['name']}: {exc.message} at {list(exc.path)}")
    assert not errors, "\n".join(errors)


def test_every_overlay_and_base_is_found() -> None:
    found = {str(p.relative_to(K8S)) for p in kustomization_dirs()}
    assert {"base", "overlays/dev", "overlays/prod"} <= found
    assert {f"base/{service}" for service in SERVICES} | {"base/nats", "base/postgres"} <= found


def test_strict_validation_rejects_an_unknown_field(overlays: dict[str, Manifests]) -> None:
    deployment = dict(overlays["dev"].get("Deployment", "booking"))
    deployment["spec"] = {**deployment["spec"], "replica": 2}
    with pytest.raises(kubernetes_validate.ValidationError, match="replica"):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_schemas_are_bundled_for_offline_use() -> None:
    # kubernetes-validate ships the schemas: nothing is downloaded, so CI needs no network.
    root = Path(str(kubernetes_validate.__file__)).parent / "kubernetes-json-schema"
    assert (root / f"v{KUBERNETES_VERSION}-local-strict" / "deployment-apps-v1.json").exists()


def test_cert_manager_objects_are_checked_strictly(overlays: dict[str, Manifests]) -> None:
    certificate = dict(overlays["prod"].get("Certificate", "nats-tls"))
    certmanager.validate(certificate)
    certificate["spec"] = {**certificate["spec"], "dnsName": ["nats"]}
    with pytest.raises(certmanager.jsonschema.ValidationError, match="dnsName"):
        certmanager.validate(certificate)
