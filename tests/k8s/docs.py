"""What docs/kubernetes.md tells users to create, read back so tests hold the docs to the manifests."""

from __future__ import annotations

import re

from tests.k8s.manifests import REPO

DOC = REPO / "docs" / "kubernetes.md"

_CREATE = re.compile(
    r"kubectl -n choreo create secret generic ([a-z0-9-]+)((?:\s+\\?\s*--from-literal=[^\s]+)+)"
)
_KEY = re.compile(r"--from-literal=([A-Za-z0-9_.-]+)=")


def prod_secret_keys() -> dict[str, set[str]]:
    """Secret name -> keys, from the `kubectl -n choreo create secret generic` commands of the docs."""
    text = DOC.read_text().replace("\\\n", " ")
    found: dict[str, set[str]] = {}
    for match in _CREATE.finditer(text):
        found.setdefault(match.group(1), set()).update(_KEY.findall(match.group(2)))
    return found


def prod_secrets() -> list[str]:
    return sorted(prod_secret_keys())
