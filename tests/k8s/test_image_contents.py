"""What the image would contain: the build context (.dockerignore applied) installs with
`pip install .` and provides every package a Deployment runs, from the install alone.

No container engine runs here; this performs the Dockerfile's install step on the same
context, outside a container.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.k8s.dockerfile import ignored, read_ignore
from tests.k8s.manifests import REPO, SERVICES, Manifests, only_container

pytestmark = pytest.mark.slow


def build_context(destination: Path) -> list[str]:
    """Copies what `docker build .` would send; returns the relative paths copied."""
    patterns = read_ignore(REPO / ".dockerignore")
    copied = []
    for root, dirs, files in os.walk(REPO):
        base = Path(root).relative_to(REPO)
        dirs[:] = [d for d in dirs if not ignored(patterns, (base / d).as_posix())]
        for name in files:
            relative = (base / name).as_posix()
            if not ignored(patterns, relative):
                (destination / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(Path(root) / name, destination / relative)
                copied.append(relative)
    return copied


def test_build_context_installs_every_service(overlays: dict[str, Manifests], tmp_path: Path) -> None:
    context, site = tmp_path / "context", tmp_path / "site"
    copied = build_context(context)
    assert not [p for p in copied if p.startswith(("tests/", ".git/", "var/", "k8s/"))]
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site), str(context)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    modules = {only_container(d)["command"][-1] for d in overlays["prod"].of_kind("Deployment")}
    assert modules == set(SERVICES)
    # From an empty directory, with the installed copy first on the path: each `python -m <service>`
    # entry point and the runtime resolve to the install, never to the working tree.
    probe = (
        "import importlib.util, sys\n"
        f"for name in {sorted(modules | {'choreo'})!r}:\n"
        "    spec = importlib.util.find_spec(name + ('' if name == 'choreo' else '.__main__'))\n"
        "    print(name, spec.origin if spec else None)\n"
    )
    empty = tmp_path / "cwd"
    empty.mkdir()
    result = subprocess.run(
        [sys.executable, "-c", probe],
        env={**os.environ, "PYTHONPATH": str(site)},
        cwd=empty,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    origins = dict(line.split(" ", 1) for line in result.stdout.splitlines())
    for name, origin in origins.items():
        assert origin.startswith(str(site)), f"{name} resolved to {origin}, not to the installed copy"
    # Generated protobuf code ships too (the services import it).
    assert (site / "choreo" / "gateway" / "v1" / "gateway_pb2.py").exists()
