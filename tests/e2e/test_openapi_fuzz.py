"""Schemathesis fuzzes the gateway's HTTP API from its own ``/openapi.json``.

The real system runs (booking, payment, gateway processes on a real nats-server);
schemathesis generates requests from the published schema, valid and invalid, and
checks every answer: never a 5xx, and every response matches the schema (status
code documented, body of the documented shape, content type). A failure prints
schemathesis' report with a ``curl`` line that reproduces it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.stack import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

#: Examples per operation: enough to hit every field's bad values, small enough for CI.
MAX_EXAMPLES = 40


def run_schemathesis(stack: Stack, report_dir: Path, headers: list[str]) -> subprocess.CompletedProcess[str]:
    st = Path(sys.executable).with_name("st")
    command = [
        str(st if st.exists() else shutil.which("st") or "st"),
        "run",
        f"{stack.http_base}/openapi.json",
        "--checks",
        "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        "1",
        "--workers",
        "2",
        "--request-timeout",
        "15",
        "--report-dir",
        str(report_dir),
    ]
    for header in headers:
        command += ["--header", header]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)


def test_the_http_api_answers_every_generated_request_as_documented(stack: Stack, tmp_path: Path) -> None:
    result = run_schemathesis(stack, tmp_path / "report", [])
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]
