"""The image definition's shape (no container engine runs here, so this is what can be checked)."""

from __future__ import annotations

import re

import pytest

from tests.k8s.dockerfile import Stage, ignored, parse, read_ignore
from tests.k8s.manifests import REPO, SERVICES


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse(REPO / "Dockerfile")


def test_multi_stage_on_a_pinned_slim_python(stages: list[Stage]) -> None:
    assert len(stages) >= 2, "a builder stage and a runtime stage"
    for stage in stages:
        repository, _, tag = stage.image.partition(":")
        assert repository == "python", stage.image
        assert re.fullmatch(r"3\.11(\.\d+)?-slim(-\w+)?", tag), (
            f"not a pinned slim Python 3.11: {stage.image}"
        )
        assert "latest" not in tag


def test_builder_installs_the_project_into_a_virtualenv(stages: list[Stage]) -> None:
    builder = stages[0]
    runs = " ".join(builder.args("RUN"))
    assert "python -m venv /opt/venv" in runs
    assert re.search(r"pip wheel [^&]* \.(\s|$)", runs), "the project's wheel, built from the source"
    assert re.search(r"pip install --no-deps /tmp/dist/choreo-\S*\.whl", runs), "the wheel installed"
    # The image must import every package a Deployment runs.
    assert all(name in runs for name in ("import choreo", *SERVICES)), runs


def test_builder_installs_only_hash_locked_packages(stages: list[Stage]) -> None:
    builder = stages[0]
    copies = builder.args("COPY")
    assert copies[0] == "requirements.lock requirements-build.lock ./", "the locks alone, before the source"
    installs = [
        part.strip()
        for run in builder.args("RUN")
        for part in run.split("&&")
        if re.search(r"pip install\b", part)
    ]
    assert installs, "the builder installs something"
    for install in installs:
        # From a lock, every file checked against its sha256; or the wheel built here, alone.
        locked = re.search(
            r"pip install --require-hashes --requirement requirements(-build)?\.lock$", install
        )
        assert locked or "--no-deps /tmp/dist/" in install, f"not hash-locked: {install}"
    assert any("requirements.lock" in i for i in installs) and any(
        "requirements-build.lock" in i for i in installs
    )
    wheel = " ".join(builder.args("RUN"))
    # Build isolation would fetch an unpinned backend; the locked one builds instead.
    assert "--no-build-isolation" in wheel


def test_runtime_copies_only_the_virtualenv(stages: list[Stage]) -> None:
    runtime = stages[-1]
    copies = runtime.args("COPY")
    assert copies == [f"--from={stages[0].name} /opt/venv /opt/venv"], copies
    runs = " ".join(runtime.args("RUN"))
    for tool in ("pip install", "apt-get install", "gcc", "build-essential"):
        assert tool not in runs, f"the runtime stage must not run {tool}"
    assert not runtime.args("ADD") and not stages[0].args("ADD"), "ADD fetches URLs and unpacks: use COPY"


def test_runs_as_a_numeric_non_root_user(stages: list[Stage]) -> None:
    users = stages[-1].args("USER")
    assert users, "the runtime stage sets USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) >= 10000, f"numeric uid >= 10000, got {users[-1]}"
    assert gid.isdigit() and int(gid) > 0


def test_works_on_a_read_only_root_filesystem(stages: list[Stage]) -> None:
    env = " ".join(stages[-1].args("ENV"))
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert "HOME=/tmp" in env and "TMPDIR=/tmp" in env
    assert stages[-1].args("WORKDIR")


def test_no_secret_in_build_arguments_or_environment(stages: list[Stage]) -> None:
    for stage in stages:
        for text in stage.args("ENV") + stage.args("ARG"):
            assert not re.search(r"(PASSWORD|SECRET|TOKEN|_KEY)\b", text, re.IGNORECASE), text


def test_default_command_runs_the_chosen_service(stages: list[Stage]) -> None:
    runtime = stages[-1]
    assert any(a.startswith("SERVICE") for a in runtime.args("ARG"))
    assert "CHOREO_SERVICE=${SERVICE}" in " ".join(runtime.args("ENV"))
    assert runtime.args("CMD") == ['["/bin/sh", "-c", "exec python -m \\"$CHOREO_SERVICE\\""]']


def test_dockerignore_keeps_what_the_build_needs() -> None:
    patterns = read_ignore(REPO / ".dockerignore")
    for needed in (
        "pyproject.toml",
        "README.md",
        "requirements.lock",
        "requirements-build.lock",
        "choreo/envelope.py",
        *(f"{s}/__main__.py" for s in SERVICES),
    ):
        assert not ignored(patterns, needed), f".dockerignore excludes {needed}, which pip install . needs"
    for unwanted in (
        ".git/HEAD",
        "var/booking.db",
        "tests/conftest.py",
        ".venv/bin/python",
        "a/__pycache__/x.pyc",
    ):
        assert ignored(patterns, unwanted), f".dockerignore lets {unwanted} into the build context"


def test_the_ignore_matcher() -> None:
    assert ignored(["**/__pycache__"], "choreo/__pycache__/x.pyc")
    assert not ignored(["var", "!var"], "var/x")
    assert ignored(["*.db"], "booking.db")
    assert not ignored(["tests"], "choreo/tests.py")
