"""Schemathesis fuzzes the gateway's HTTP API from its own ``/openapi.json``.

The real system runs (booking, payment, gateway processes on a real nats-server)
with ``GATEWAY_AUTH=jwt``, and schemathesis calls it with a user's bearer token: it
generates requests from the published schema, valid and invalid, and checks every
answer: never a 5xx, and every response matches the schema (status code documented,
body of the documented shape, content type). A failure prints schemathesis' report
with a ``curl`` line that reproduces it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from choreoctl.stack.devauth import mint
from choreoctl.stack.natsserver import NatsServer
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
    # In the test's folder: schemathesis keeps a cache of crashes in its working directory.
    return subprocess.run(
        command, capture_output=True, text=True, timeout=600, check=False, cwd=report_dir.parent
    )


#: The gateway's HS256 key in this test (48 bytes, like ``choreo up --auth``'s).
SECRET = "openapi-fuzz-" + "k" * 35


def test_the_http_api_answers_every_generated_request_as_documented(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    stack = Stack(tmp_path, nats_server.url, env={"GATEWAY_AUTH": "jwt", "GATEWAY_JWT_HS256_SECRET": SECRET})
    token = mint(SECRET, "fuzz-user")
    bearer = {"Authorization": f"Bearer {token}"}
    try:
        stack.start()
        result = run_schemathesis(stack, tmp_path / "report", [f"Authorization: {bearer['Authorization']}"])
        # The run was authenticated (the token opens the API, which is closed without one).
        with_token = httpx.get(f"{stack.http_base}/v1/bookings", headers=bearer, timeout=10)
        without = httpx.get(f"{stack.http_base}/v1/bookings", timeout=10)
    finally:
        stack.stop()
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]
    assert (with_token.status_code, without.status_code) == (200, 401)
