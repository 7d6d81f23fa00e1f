"""``choreo up`` end to end: real nats-server, the real services as processes, real signals.

These run every service, notification and analytics included: they need those
packages (issue 11's other parts). ``test_up_standins.py`` runs ``choreo up`` with
stand-ins for those two.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import stat
from pathlib import Path

import jwt
import nats
import nats.errors
import pytest

from choreo.natsidentity import inbox_prefix
from choreoctl.stack.mailsink import MailSink, MailStore, read_headers
from choreoctl.stack.natsserver import NatsServer
from choreoctl.stack.ports import free_port
from choreoctl.stack.services import SERVICES
from tests.cli.test_dlq import choreo_cli
from tests.cli.upprocess import Up, alive, assert_ready, assert_stopped_cleanly, process_env

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


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
    assert {"BOOKING", "PAYMENT", "NOTIFICATION", "INVENTORY", "DLQ"} <= streams
    code, out = await choreo_cli("dlq", "--nats-url", operator_url, "list")
    assert (code, out.strip()) == (0, "the DLQ is empty")
    data = tmp_path / "var"
    for name in SERVICES:
        assert (data / "logs" / f"{name}.log").stat().st_size > 0
    assert (data / "booking.db").exists() and (data / "nats" / "jetstream").is_dir()
    assert (data / "notification.db").exists() and (data / "analytics.db").exists()
    assert (data / "inventory.db").exists()
    assert re.search(rf"^  mail\s+{re.escape(str(data / 'mail'))}\s+\(one \.eml per email\)", up.output, re.M)
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
    # Each booking's two emails: beside its outcome (subjects, its id as …), and in DIR/mail.
    mail = tmp_path / "var" / "mail"
    stored = [read_headers(path) for path in MailStore(mail).paths()]
    for row in rows:
        booking_id = row.split()[0]
        assert "We received your booking … | Your booking …" in row, row
        mine = [m for m in stored if m.booking_id == booking_id]
        assert len(mine) == 2 and {m.to for m in mine} == {"demo@example.com"}, mine
        assert all(booking_id in m.subject and m.subject.replace(booking_id, "…") in row for m in mine), (
            mine,
            row,
        )
    assert f"Emails: {mail} (one .eml per email" in out
    assert "choreo.notification.v1.NotificationSent" in trace, "the trace shows the emails"
    assert "  bookings    created 6, confirmed 3, cancelled 3" in out
    assert "  cancelled   card_declined 1, insufficient_funds 1, invalid_payment_token 1" in out
    assert "  confirmed   EUR 292.00" in out
    # The saga: a sold-out booking and a paid one its user cancelled, with their traces.
    saga = out[out.index("Saga: resource demo-room-") :]
    stories = [line.split() for line in saga.splitlines() if re.match(r"\S+\s+demo-room-\S+\s", line)]
    assert [row[-3:] for row in stories] == [
        ["CANCELLED", "cancelled_by_user", "ok"],
        ["CANCELLED", "sold_out", "ok"],
    ], saga
    paid = saga[saga.index("Trace of booking") : saga.index("(sold out), correlation id")]
    facts = [
        "choreo.booking.v1.BookingCreated",
        "choreo.inventory.v1.InventoryReserved",
        "choreo.payment.v1.PaymentSucceeded",
        "choreo.booking.v1.BookingConfirmed",
        "choreo.booking.v1.BookingCancelled",
    ]
    positions = [paid.index(t) for t in facts]
    assert positions == sorted(positions), paid
    assert "choreo.inventory.v1.InventoryReleased" in paid and "choreo.payment.v1.PaymentRefunded" in paid
    sold_out = saga[saga.index("(sold out), correlation id") :]
    assert "choreo.inventory.v1.InventoryReservationFailed" in sold_out
    assert "choreo.payment.v1" not in sold_out.split("\nRefund:")[0], "a sold-out booking is never charged"
    assert re.search(r"^Refund: PaymentRefunded \d+ ms after BookingCancelled", saga, re.M), saga


async def test_demo_with_an_exported_smtp_server_sends_there(start_up: type[Up], tmp_path: Path) -> None:
    """With NOTIFICATION_SMTP_HOST exported, no sink runs: the emails reach that server."""
    async with MailSink(tmp_path / "external") as server:
        env = {
            **os.environ,
            "NOTIFICATION_SMTP_HOST": server.host,
            "NOTIFICATION_SMTP_PORT": str(server.port),
            "NOTIFICATION_SMTP_SECURITY": "none",
        }
        up = start_up("--demo", env=env)
        code = await asyncio.to_thread(up.process.wait, 180)
        await asyncio.to_thread(up._reader.join, 5)
        received = [read_headers(path) for path in MailStore(tmp_path / "external").paths()]
    out = up.output
    assert code == 0, out
    assert f"emails go to the SMTP server {server.host}:{server.port}" in out
    assert f"Emails went to the SMTP server {server.host}:{server.port} (NOTIFICATION_SMTP_HOST)" in out
    assert not (tmp_path / "var" / "mail").exists()
    rows = [line for line in out.splitlines() if re.search(r"\s(grpc|http)\s+tok_", line)]
    demo_ids = {row.split()[0] for row in rows}
    assert len(rows) == 6 and len([m for m in received if m.booking_id in demo_ids]) == 12, (out, received)
    assert demo_ids <= {m.booking_id for m in received}


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
