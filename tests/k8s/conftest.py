"""Fixtures of the Kubernetes tests: the tools and the rendered overlays (rendered once)."""

from __future__ import annotations

import pytest

from tests.k8s import tools
from tests.k8s.manifests import K8S, OVERLAYS, Manifests, render


@pytest.fixture(scope="session")
def kubectl() -> str:
    return tools.kubectl()


@pytest.fixture(scope="session")
def overlays(kubectl: str) -> dict[str, Manifests]:
    """What `kubectl kustomize k8s/overlays/<name>` renders, for dev and prod."""
    return {name: Manifests(render(kubectl, K8S / "overlays" / name)) for name in OVERLAYS}
