"""scripts/audit.py, the pip-audit step of `.ci/run`: offline-safe, and failing where it should.

The advisory service is a real HTTP server on loopback speaking OSV's query API
(pip-audit's ``--osv-url``), or an address nothing listens on, or an unreachable proxy.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from choreoctl.stack.ports import free_port

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "audit.py"

#: The advisory the fake service holds: request smuggling in h11 before 0.16 (CVE-2025-43859).
H11_ADVISORY = {
    "id": "GHSA-vqfr-h8mv-ghfj",
    "aliases": ["CVE-2025-43859"],
    "summary": "h11 accepts some malformed Chunked-Encoding bodies",
    "affected": [
        {
            "package": {"name": "h11", "ecosystem": "PyPI"},
            "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "0.16.0"}]}],
        }
    ],
}


class FakeOsv(BaseHTTPRequestHandler):
    """OSV's ``POST /v1/query``: the H11 advisory for h11 below 0.16, nothing for the rest."""

    status = 200
    queried: list[str] = []

    def do_POST(self) -> None:
        query: dict[str, Any] = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        name, version = query["package"]["name"], query["version"]
        type(self).queried.append(name)
        vulnerable = name == "h11" and tuple(int(p) for p in version.split(".")[:2]) < (0, 16)
        body = json.dumps({"vulns": [H11_ADVISORY]} if vulnerable else {}).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def osv() -> Iterator[tuple[str, type[FakeOsv]]]:
    handler = type("Handler", (FakeOsv,), {"queried": [], "status": 200})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1/query", handler
    finally:
        server.shutdown()
        server.server_close()


def audit(
    lock: Path, *args: str, env: dict[str, str] | None = None, cache: Path
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    command = [sys.executable, str(SCRIPT), "--lock", str(lock), "--cache-dir", str(cache), "--timeout", "5"]
    return subprocess.run(
        [*command, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**base, **(env or {})},
        check=False,
    )


def locked(tmp_path: Path, h11: str) -> Path:
    """The project's lock with h11 replaced by ``h11==<h11>`` (hash kept: nothing is downloaded)."""
    text = (REPO / "requirements.lock").read_text().replace("h11==0.16.0", f"h11=={h11}")
    assert f"h11=={h11}" in text
    path = tmp_path / "requirements.lock"
    path.write_text(text)
    return path


def test_a_known_vulnerability_fails(osv: tuple[str, type[FakeOsv]], tmp_path: Path) -> None:
    url, handler = osv
    result = audit(locked(tmp_path, "0.14.0"), "-s", "osv", "--osv-url", url, cache=tmp_path / "cache")
    assert result.returncode == 1, result.stderr
    assert "h11 0.14.0: CVE-2025-43859 (GHSA-vqfr-h8mv-ghfj), fixed in 0.16.0" in result.stderr
    assert "h11" in handler.queried


def test_the_lock_passes_a_reachable_service(osv: tuple[str, type[FakeOsv]], tmp_path: Path) -> None:
    url, handler = osv
    result = audit(REPO / "requirements.lock", "-s", "osv", "--osv-url", url, cache=tmp_path / "cache")
    assert result.returncode == 0, result.stderr
    assert "WARNING" not in result.stderr
    packages = sum(1 for line in (REPO / "requirements.lock").read_text().splitlines() if "==" in line)
    assert f"no known vulnerabilities in the {packages} packages" in result.stdout
    assert len(set(handler.queried)) == packages, "every locked package was looked up"


def test_an_unreachable_service_warns_and_passes(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1/query"  # nothing listens there
    result = audit(locked(tmp_path, "0.14.0"), "-s", "osv", "--osv-url", url, cache=tmp_path / "cache")
    assert result.returncode == 0, result.stderr
    assert "WARNING: the advisory service could not be reached" in result.stderr
    assert "NOT audited" in result.stderr


def test_an_unreachable_proxy_warns_and_passes(tmp_path: Path) -> None:
    # PyPI's service (the default) through a proxy that refuses connections.
    proxy = f"http://127.0.0.1:{free_port()}"
    env = {"HTTPS_PROXY": proxy, "https_proxy": proxy, "HTTP_PROXY": proxy, "http_proxy": proxy}
    result = audit(REPO / "requirements.lock", env=env, cache=tmp_path / "cache")
    assert result.returncode == 0, result.stderr
    assert "WARNING: the advisory service could not be reached" in result.stderr


def test_a_failing_service_warns_and_passes(osv: tuple[str, type[FakeOsv]], tmp_path: Path) -> None:
    url, handler = osv
    handler.status = 503
    result = audit(locked(tmp_path, "0.14.0"), "-s", "osv", "--osv-url", url, cache=tmp_path / "cache")
    assert result.returncode == 0, result.stderr
    assert "WARNING: the advisory service could not be reached" in result.stderr


def test_another_failure_is_not_taken_for_an_outage(tmp_path: Path) -> None:
    unhashed = tmp_path / "requirements.lock"
    unhashed.write_text("h11==0.16.0\n")
    result = audit(unhashed, cache=tmp_path / "cache")
    assert result.returncode == 2, result.stderr
    assert "WARNING" not in result.stderr
