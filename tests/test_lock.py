"""requirements.lock (what the image installs, with hashes) agrees with pyproject.toml.

Every runtime dependency pyproject.toml names is locked at a version its specifier
allows, and so is every dependency of theirs (read from the installed distributions'
metadata: `.ci/run` installs the lock before the project, so the tests run what the image
ships). Each entry carries sha256 hashes. The same holds for the build backend and
requirements-build.lock. `scripts/lock.sh` regenerates both.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "requirements.lock"
BUILD_LOCK = REPO / "requirements-build.lock"
#: The image's interpreter and platform (Dockerfile: python:3.11-slim-bookworm on x86_64).
IMAGE_MARKERS = {
    "python_version": "3.11",
    "python_full_version": "3.11.0",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
}
_ENTRY = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", re.MULTILINE)


def parse_lock(text: str) -> dict[str, Version]:
    """Canonical name -> locked version; fails on an entry without a sha256 hash."""
    locked: dict[str, Version] = {}
    # One entry per block: the `name==version \` line and its `--hash` continuation lines.
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        match = _ENTRY.match(block)
        if match is None:
            continue
        name = canonicalize_name(match.group(1))
        assert re.search(r"--hash=sha256:[0-9a-f]{64}", block), f"{name} is locked without a hash"
        assert name not in locked, f"{name} is locked twice"
        locked[name] = Version(match.group(2))
    return locked


def applies(requirement: Requirement, extras: frozenset[str] = frozenset()) -> bool:
    """Whether the requirement is installed in the image (its marker, given the extras asked for)."""
    if requirement.marker is None:
        return True
    return any(requirement.marker.evaluate({**IMAGE_MARKERS, "extra": e}) for e in extras or {""})


def disagreements(requirements: list[Requirement], locked: dict[str, Version]) -> list[str]:
    """What in ``requirements`` the lock lacks or pins outside the specifier."""
    problems = []
    for requirement in requirements:
        if not applies(requirement):
            continue
        name = canonicalize_name(requirement.name)
        if name not in locked:
            problems.append(f"{requirement} is not in the lock")
        elif not requirement.specifier.contains(locked[name], prereleases=True):
            problems.append(f"{requirement}: the lock has {name}=={locked[name]}")
    return problems


def pyproject() -> dict[str, object]:
    with (REPO / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)


def runtime_requirements() -> list[Requirement]:
    project = pyproject()["project"]
    assert isinstance(project, dict)
    return [Requirement(r) for r in project["dependencies"]]


def test_every_runtime_dependency_is_locked_within_its_specifier() -> None:
    locked = parse_lock(LOCK.read_text())
    assert disagreements(runtime_requirements(), locked) == []


def test_the_build_backend_is_locked_within_its_specifier() -> None:
    build = pyproject()["build-system"]
    assert isinstance(build, dict)
    requirements = [Requirement(r) for r in build["requires"]]
    assert disagreements(requirements, parse_lock(BUILD_LOCK.read_text())) == []


def test_the_lock_holds_every_dependency_of_the_dependencies() -> None:
    # Walks the installed distributions' metadata from pyproject.toml's dependencies (extras
    # included): each one reached must be locked, at the version installed here.
    locked = parse_lock(LOCK.read_text())
    pending = [(r, frozenset(r.extras)) for r in runtime_requirements() if applies(r)]
    seen: set[str] = set()
    problems = []
    while pending:
        requirement, extras = pending.pop()
        name = canonicalize_name(requirement.name)
        problems += disagreements([Requirement(f"{name}{requirement.specifier}")], locked)
        key = f"{name}[{','.join(sorted(extras))}]"
        if key in seen or name not in locked:
            continue
        seen.add(key)
        try:
            installed = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            problems.append(f"{name} is locked but not installed: pip install -r requirements.lock")
            continue
        if Version(installed.version) != locked[name]:
            problems.append(f"{name} {installed.version} is installed, the lock has {locked[name]}")
            continue
        for text in installed.requires or []:
            child = Requirement(text)
            if applies(child, extras):
                pending.append((child, frozenset(child.extras)))
    assert not problems, "\n".join(sorted(set(problems)))
    assert {"h11", "cryptography", "greenlet"} <= {k.split("[")[0] for k in seen}, "the walk reached extras"


def test_a_missing_or_stale_entry_is_reported() -> None:
    locked = parse_lock(LOCK.read_text())
    del locked["h11"]
    locked["pyjwt"] = Version("2.10.0")
    problems = disagreements(runtime_requirements(), locked)
    assert any(p.startswith("h11>=0.16 is not in the lock") for p in problems), problems
    assert any("pyjwt==2.10.0" in p for p in problems), problems


def test_an_entry_without_a_hash_is_refused() -> None:
    with pytest.raises(AssertionError, match="h11 is locked without a hash"):
        parse_lock("anyio==4.16.0 \\\n    --hash=sha256:" + "0" * 64 + "\nh11==0.16.0\n")


def test_markers_follow_the_image_platform() -> None:
    assert applies(Requirement("uvloop>=0.21; sys_platform != 'win32'"))
    assert not applies(Requirement("pywin32; sys_platform == 'win32'"))
    assert applies(Requirement("greenlet; extra == 'asyncio'"), frozenset({"asyncio"}))
    assert not applies(Requirement("greenlet; extra == 'asyncio'"))


def test_the_lock_script_is_there_and_executable() -> None:
    script = REPO / "scripts" / "lock.sh"
    assert os.access(script, os.X_OK)
    text = script.read_text()
    assert "--generate-hashes" in text and "requirements.lock" in text and "requirements-build.lock" in text
    for lock in (LOCK, BUILD_LOCK):
        assert "scripts/lock.sh" in lock.read_text().splitlines()[1], f"{lock.name} names its generator"
