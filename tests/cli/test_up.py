"""``choreo up`` end to end: real nats-server, the real services as processes, real signals."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import jwt
import nats
import nats.errors
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from choreo.natsidentity import inbox_prefix
from choreoctl.stack.natsserver import NatsServer
from choreoctl.stack.ports import free_port
from tests.cli.test_dlq import choreo_cli
from tests.support import SERVICES

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
ANY_PORT = [
    "--grpc-port",
    "0",
    "--http-port",
    "0",
    "--booking-health-port",
    "0",
    "--payment-health-port",
    "0",
    "--notification-health-port",
    "0",
    "--analytics-health-port",
    "0",
]


class Up:
    """A running ``choreo up`` whose console output is collected line by line."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "choreoctl", "up", *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 60.0, after: int = 0) -> re.Match[str]:
        """The first line from index ``after`` matching ``pattern``; fails at the deadline or on exit."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines[after:]:
                match = regex.search(line)
                if match:
                    return match
            if self.process.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.05)
        raise AssertionError(f"no line matching {pattern!r}; output:\n{self.output}")

    def endpoint(self, label: str) -> str:
        return self.wait_for(rf"^  {label}\s+(\S+)").group(1)

    def service_pids(self) -> dict[str, int]:
        pids = {}
        for line in self.lines:
            match = re.search(r" (booking|payment|gateway)\s+started \(pid (\d+)\)", line)
            if match:
                pids[match.group(1)] = int(match.group(2))
        return pids

    def interrupt(self, timeout: float = 60.0) -> int:
        self.process.send_signal(signal.SIGINT)
        code = self.process.wait(timeout)
        self._reader.join(5)
        return code

    def kill(self) -> None:
        """Clean-up after a failed test: no process may outlive it."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for pid in self.service_pids().values():
            if alive(pid):
                os.killpg(pid, signal.SIGKILL)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def start_up(tmp_path: Path) -> Iterator[type[Up]]:
    started: list[Up] = []

    class Started(Up):
        def __init__(self, *args: str) -> None:
            super().__init__("--data-dir", str(tmp_path / "var"), *ANY_PORT, *args)
            started.append(self)

    yield Started
    for up in started:
        up.kill()


def assert_ready(up: Up) -> None:
    for name in SERVICES:
        url = up.wait_for(rf"^  health\s+{name}\s+(\S+)").group(1)
        assert httpx.get(url, timeout=5).status_code == 200, url
    with grpc.insecure_channel(up.endpoint("gRPC")) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    openapi = httpx.get(up.endpoint("OpenAPI"), timeout=5)
    assert "/v1/bookings" in openapi.json()["paths"]


def assert_stopped_cleanly(up: Up, code: int) -> None:
    assert code == 0, up.output
    for name in SERVICES:
        assert re.search(rf" {name}\s+stopped \(exit 0\)", up.output), name
    assert not [pid for pid in up.service_pids().values() if alive(pid)]


async def test_up_starts_everything_and_stops_on_sigint(start_up: type[Up], tmp_path: Path) -> None:
    up = start_up()
    up.wait_for("Press Ctrl-C to stop.", timeout=90)
    nats_url = up.endpoint("NATS")
    operator_url = up.endpoint("operator")
    assert operator_url.startswith("nats://operator:") and operator_url.endswith(
        nats_url.removeprefix("nats://")
    )
    assert_ready(up)
    # Replay tools read every stream with the operator URL.
    nc = await nats.connect(operator_url, inbox_prefix=inbox_prefix("operator"))
    try:
        streams = {info.config.name for info in await nc.jetstream().streams_info()}
    finally:
        await nc.close()
    assert {"BOOKING", "PAYMENT", "DLQ"} <= streams
    code, out = await choreo_cli("dlq", "--nats-url", operator_url, "list")
    assert (code, out.strip()) == (0, "the DLQ is empty")
    data = tmp_path / "var"
    for name in SERVICES:
        assert (data / "logs" / f"{name}.log").stat().st_size > 0
    assert (data / "booking.db").exists() and (data / "nats" / "jetstream").is_dir()
    assert re.search(r"auth\s+none: anyone reaching the gateway may act as any user", up.output)
    code = up.interrupt()
    assert_stopped_cleanly(up, code)
    assert re.search(r" nats\s+stopped", up.output)


async def test_up_runs_nats_with_a_user_per_service(start_up: type[Up], tmp_path: Path) -> None:
    """The attack: with no NATS auth, anyone reaching `choreo up`'s NATS could publish a
    `payment.succeeded` and confirm a declined booking."""
    up = start_up()
    up.wait_for("Press Ctrl-C to stop.", timeout=90)
    nats_url = up.endpoint("NATS")
    secrets = tmp_path / "var" / "secrets"
    with pytest.raises((nats.errors.Error, OSError)):
        anonymous = await nats.connect(nats_url, allow_reconnect=False, max_reconnect_attempts=0)
        await anonymous.close()
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc).lower())

    password = (secrets / "BOOKING_NATS_PASSWORD").read_text().strip()
    booking = await nats.connect(
        nats_url, user="booking", password=password, error_cb=on_error, inbox_prefix=inbox_prefix("booking")
    )
    try:
        await booking.publish("payment.succeeded", b"forged")
        await booking.flush()
        await asyncio.sleep(0.5)
    finally:
        await booking.close()
    assert any("permissions violation" in e and "payment.succeeded" in e for e in errors), errors
    # Each service runs as its user, with the password stored in the data directory (0600).
    for name in SERVICES:
        env = process_env(up.service_pids()[name])
        prefix = name.upper()
        stored = secrets / f"{prefix}_NATS_PASSWORD"
        assert stat.S_IMODE(stored.stat().st_mode) == 0o600
        assert env[f"{prefix}_NATS_USER"] == name
        assert env[f"{prefix}_NATS_PASSWORD"] == stored.read_text().strip()
    before = {p.name: p.read_text() for p in secrets.iterdir()}
    assert_stopped_cleanly(up, up.interrupt())
    # A second run reuses them.
    again = start_up()
    again.wait_for("Press Ctrl-C to stop.", timeout=90)
    assert {p.name: p.read_text() for p in secrets.iterdir()} == before
    assert_stopped_cleanly(again, again.interrupt())


def process_env(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def test_a_killed_service_is_restarted(start_up: type[Up], nats_server: NatsServer, tmp_path: Path) -> None:
    up = start_up("--nats-url", nats_server.url)
    up.wait_for("Press Ctrl-C to stop.", timeout=90)
    assert f"using {nats_server.url}" in up.output
    # Another server's users are not ours to make.
    assert "operator" not in up.output and not (tmp_path / "var" / "secrets").exists()
    assert "BOOKING_NATS_USER" not in process_env(up.service_pids()["booking"])
    first = up.service_pids()["payment"]
    mark = len(up.lines)
    os.kill(first, signal.SIGKILL)
    up.wait_for(r"payment\s+killed by SIGKILL; restarting in 1\.0s", timeout=30, after=mark)
    second = int(up.wait_for(r"payment\s+ready \(pid (\d+)", timeout=60, after=mark).group(1))
    assert second != first and alive(second)
    assert_ready(up)
    code = up.interrupt()
    assert_stopped_cleanly(up, code)
    assert nats_server.running, "a server given by --nats-url is not ours to stop"


@pytest.mark.parametrize("auth", [False, True], ids=["no-auth", "auth"])
def test_demo_prints_every_outcome_and_a_trace(start_up: type[Up], auth: bool, tmp_path: Path) -> None:
    up = start_up("--demo", *(["--auth"] if auth else []))
    if auth:
        # The gateway verifies tokens signed with the stored dev secret; the printed ones are.
        gateway = int(up.wait_for(r"gateway\s+started \(pid (\d+)\)", timeout=60).group(1))
        secret = (tmp_path / "var" / "secrets" / "GATEWAY_JWT_HS256_SECRET").read_text().strip()
        env = process_env(gateway)
        assert (env["GATEWAY_AUTH"], env["GATEWAY_JWT_HS256_SECRET"]) == ("jwt", secret)
        assert env["GATEWAY_JWT_ISSUER"] == "choreo-up"
        user = jwt.decode(up.wait_for(r"^  token\s+user\s+(\S+)").group(1), secret, algorithms=["HS256"])
        admin = jwt.decode(up.wait_for(r"^  token\s+admin\s+(\S+)").group(1), secret, algorithms=["HS256"])
        assert (user["sub"], admin["sub"], admin["scope"]) == ("dev-user", "dev-admin", "bookings:admin")
        assert "scope" not in user
    code = up.process.wait(180)
    up._reader.join(5)
    out = up.output
    assert code == 0, out
    expected = {
        "tok_visa": "CONFIRMED",
        "tok_chargeDeclined": "CANCELLED  card_declined",
        "tok_chargeDeclinedInsufficientFunds": "CANCELLED  insufficient_funds",
        "tok_xyz123": "CANCELLED  invalid_payment_token",
    }
    rows = [line for line in out.splitlines() if re.search(r"\s(grpc|http)\s+tok_", line)]
    assert len(rows) == 6, out
    for row in rows:
        token = row.split()[2]
        assert re.sub(r"\s+", " ", expected[token]) in re.sub(r"\s+", " ", row), row
        assert row.rstrip().endswith("ok"), row
    assert any(" http " in row for row in rows)
    trace = out[out.index("Trace of booking") :]
    types = [
        "choreo.booking.v1.BookingCreated",
        "choreo.payment.v1.PaymentFailed",
        "choreo.booking.v1.BookingCancelled",
    ]
    positions = [trace.index(t) for t in types]
    assert positions == sorted(positions), "the trace is in causal order"
    assert "Demo passed." in out
    assert ("auth        jwt" in out) == auth and ("auth        none" in out) == (not auth)
    assert_stopped_cleanly(up, code)


def test_services_that_never_get_ready_are_reported_with_their_logs(start_up: type[Up]) -> None:
    unreachable = f"nats://127.0.0.1:{free_port()}"
    # A short grace: services still connecting to NATS do not act on SIGTERM yet (see the report).
    up = start_up("--nats-url", unreachable, "--ready-timeout", "2", "--stop-grace", "2")
    code = up.process.wait(60)
    up._reader.join(5)
    assert code == 1, up.output
    assert re.search(r"booking\s+not ready after 2s; last lines of .*booking\.log:", up.output)
    assert "choreo is up" not in up.output
    assert not [pid for pid in up.service_pids().values() if alive(pid)]
