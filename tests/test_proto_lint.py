"""The contracts pass `buf lint` with the STANDARD rules (buf.yaml at the top of the repo)."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def buf_binary() -> str | None:
    for candidate in (os.environ.get("CHOREO_BUF"), str(ROOT / ".tools/node_modules/.bin/buf")):
        if candidate and Path(candidate).exists():
            return candidate
    return shutil.which("buf")


def test_proto_files_are_buf_lint_clean() -> None:
    buf = buf_binary()
    if buf is None:
        if os.environ.get("CI"):
            pytest.fail("buf is missing: .ci/run installs it (npm install --prefix .tools @bufbuild/buf)")
        pytest.skip("buf not installed (npm install --prefix .tools @bufbuild/buf)")
    result = subprocess.run([buf, "lint"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_lint_would_catch_a_bad_name(tmp_path: Path) -> None:
    buf = buf_binary()
    if buf is None:
        pytest.skip("buf not installed")
    (tmp_path / "buf.yaml").write_text((ROOT / "buf.yaml").read_text())
    bad = tmp_path / "proto/choreo/demo/v1"
    bad.mkdir(parents=True)
    (bad / "demo.proto").write_text(
        'syntax = "proto3";\npackage choreo.demo.v1;\n'
        "enum Color { RED = 0; }\n"
        "message thing { string Name = 1; }\n"
    )
    result = subprocess.run([buf, "lint"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert '"RED" should be suffixed with "_UNSPECIFIED"' in result.stdout
    assert 'Message name "thing" should be PascalCase' in result.stdout


#: The contract as last released, a buf image (``buf build -o proto/released.binpb``, made again
#: at each release). Every change since must be additive: clients built against it keep working.
RELEASED = ROOT / "proto" / "released.binpb"


def test_the_contracts_break_nothing_released() -> None:
    buf = buf_binary()
    if buf is None:
        if os.environ.get("CI"):
            pytest.fail("buf is missing: .ci/run installs it (npm install --prefix .tools @bufbuild/buf)")
        pytest.skip("buf not installed (npm install --prefix .tools @bufbuild/buf)")
    result = subprocess.run(
        [buf, "breaking", "--against", str(RELEASED)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_breaking_would_catch_a_removed_field(tmp_path: Path) -> None:
    buf = buf_binary()
    if buf is None:
        pytest.skip("buf not installed")
    shutil.copy(ROOT / "buf.yaml", tmp_path / "buf.yaml")
    shutil.copytree(ROOT / "proto", tmp_path / "proto")
    events = tmp_path / "proto/choreo/payment/v1/events.proto"
    text = events.read_text()
    assert "  string currency = 4;\n" in text
    events.write_text(text.replace("  string currency = 4;\n", "", 1))
    result = subprocess.run(
        [buf, "breaking", "--against", str(RELEASED)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert 'field "4" with name "currency" on message "PaymentSucceeded" was deleted' in result.stdout
