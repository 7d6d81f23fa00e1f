#!/usr/bin/env bash
# Regenerates the hash-locked dependency files the Docker image installs:
#
#   requirements.lock        every runtime dependency (pyproject.toml [project] dependencies,
#                            and theirs), one exact version each, with the sha256 of every file
#   requirements-build.lock  the build backend (pyproject.toml [build-system] requires)
#
# for the image's platform (CPython 3.11, Linux x86_64, glibc), whatever machine runs this.
# Versions already in the lock are kept when they still satisfy pyproject.toml; to move on:
#
#   scripts/lock.sh --upgrade                 # everything to the newest allowed
#   scripts/lock.sh --upgrade-package h11     # one package (repeatable)
#
# The resolver (uv, pinned below) is installed into a throwaway virtualenv and reads PyPI,
# its default index, ignoring any local uv or pip configuration. tests/test_lock.py fails
# while the lock and pyproject.toml disagree; `.ci/run` audits the lock with pip-audit.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python3}"
UV_VERSION=0.13.9

tools="$(mktemp -d)"
trap 'rm -rf "$tools"' EXIT
"$PYTHON" -m venv "$tools/venv"
"$tools/venv/bin/python" -m pip install --quiet "uv==$UV_VERSION"

compile() {
    "$tools/venv/bin/uv" pip compile --quiet --no-config \
        --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
        --generate-hashes --annotation-style line --custom-compile-command scripts/lock.sh \
        "$@"
}

"$PYTHON" - >"$tools/build-system-requires.in" <<'PY'
import tomllib

with open("pyproject.toml", "rb") as f:
    print("\n".join(tomllib.load(f)["build-system"]["requires"]))
PY

compile pyproject.toml --output-file requirements.lock "$@"
# From the throwaway directory, so that the lock names its input without a temporary path.
(cd "$tools" && compile build-system-requires.in --output-file "$OLDPWD/requirements-build.lock" "$@")
echo "requirements.lock and requirements-build.lock regenerated" >&2
