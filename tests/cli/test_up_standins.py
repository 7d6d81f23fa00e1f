"""``choreo up`` with stand-ins for notification, analytics and inventory: everything else is real.

nats-server, booking, payment and gateway are the real ones; ``python -m
notification``, ``python -m analytics`` and ``python -m inventory`` find stand-in
packages first (they are in the working directory ``choreo up`` runs in), which
answer their health port and, for notification, send one email through the SMTP
server their environment names (``standin_consumer.py``). So these check what
``choreo up`` itself does for those services (environment, NATS users, ports,
the SMTP sink or the exported server, restarts, clean stops) without the services.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from pathlib import Path

import pytest

from choreoctl.stack.mailsink import MailSink, MailStore, StoredMail, read_headers
from choreoctl.stack.ports import port_is_free
from tests.cli.standin_consumer import STANDIN_BOOKING
from tests.cli.upprocess import ROOT, Up, assert_ready, assert_stopped_cleanly, process_env

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture
def standins(tmp_path: Path) -> Path:
    """A working directory whose notification, analytics and inventory packages are the stand-ins."""
    directory = tmp_path / "standins"
    for service in ("notification", "analytics", "inventory"):
        package = directory / service
        package.mkdir(parents=True)
        (package / "__init__.py").write_text("")
        (package / "__main__.py").write_text(
            f"from tests.cli.standin_consumer import main\n\nmain({service!r})\n"
        )
    return directory


def environment(**variables: str) -> dict[str, str]:
    """This environment, without the SMTP settings a developer may have exported, plus ``variables``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFICATION_SMTP_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return {**env, **variables}


def wait_for_mail(directory: Path, count: int, timeout: float = 20.0) -> list[StoredMail]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stored = [read_headers(path) for path in MailStore(directory).paths()]
        if len(stored) >= count:
            return stored
        time.sleep(0.1)
    raise AssertionError(f"fewer than {count} messages in {directory}")


def test_up_runs_them_with_the_sink(start_up: type[Up], standins: Path, tmp_path: Path) -> None:
    data = tmp_path / "var"
    up = start_up(env=environment(NOTIFICATION_SMTP_USERNAME="meant-for-a-real-server"), cwd=standins)
    up.wait_for("Press Ctrl-C to stop.", timeout=90)
    kept = re.escape(f"emails are kept in {data / 'mail'} (*.eml), by the SMTP sink at ")
    sink = up.wait_for(rf"mail\s+{kept}(\S+):(\d+)$")
    host, port = sink.group(1), sink.group(2)
    assert host == "127.0.0.1"
    assert "NOTIFICATION_SMTP_HOST is not set: ignoring NOTIFICATION_SMTP_USERNAME" in up.output
    assert_ready(up)
    pids = up.service_pids()
    notification, analytics = process_env(pids["notification"]), process_env(pids["analytics"])
    inventory = process_env(pids["inventory"])
    assert (
        notification["NOTIFICATION_SMTP_HOST"],
        notification["NOTIFICATION_SMTP_PORT"],
        notification["NOTIFICATION_SMTP_SECURITY"],
    ) == (host, port, "none")
    assert "NOTIFICATION_SMTP_USERNAME" not in notification
    secrets = data / "secrets"
    for name, env in (("notification", notification), ("analytics", analytics), ("inventory", inventory)):
        prefix = name.upper()
        assert env[f"{prefix}_NATS_USER"] == name
        assert env[f"{prefix}_NATS_PASSWORD"] == (secrets / f"{prefix}_NATS_PASSWORD").read_text().strip()
        assert env[f"{prefix}_DATABASE_URL"] == f"sqlite+aiosqlite:///{data / f'{name}.db'}"
        health = up.wait_for(rf"^  health\s+{name}\s+http://127\.0\.0\.1:(\d+)/readyz").group(1)
        assert env[f"{prefix}_HEALTH_PORT"] == health and env[f"{prefix}_HEALTH_HOST"] == "127.0.0.1"
        assert env[f"{prefix}_NATS_URL"] == up.endpoint("NATS")
    assert process_env(pids["gateway"])["GATEWAY_STREAMS"] == "BOOKING,PAYMENT,NOTIFICATION,INVENTORY"
    [hello] = wait_for_mail(data / "mail", 1)
    assert hello.booking_id == STANDIN_BOOKING and f"pid {pids['notification']}" in hello.subject
    # Restarted like the others, with the same configuration: it mails through the sink again.
    mark = len(up.lines)
    os.kill(pids["notification"], signal.SIGKILL)
    up.wait_for(r"notification\s+killed by SIGKILL; restarting in 1\.0s", timeout=30, after=mark)
    up.wait_for(r"notification\s+ready \(pid \d+", timeout=60, after=mark)
    assert len(wait_for_mail(data / "mail", 2)) == 2
    assert_stopped_cleanly(up, up.interrupt())
    assert re.search(r" mail\s+SMTP sink stopped \(2 emails received\)", up.output)
    assert port_is_free(int(port), host)


async def test_up_passes_an_exported_smtp_server_through(
    start_up: type[Up], standins: Path, tmp_path: Path
) -> None:
    async with MailSink(tmp_path / "external") as server:
        exported = {
            "NOTIFICATION_SMTP_HOST": server.host,
            "NOTIFICATION_SMTP_PORT": str(server.port),
            "NOTIFICATION_SMTP_SECURITY": "none",
            "NOTIFICATION_SMTP_USERNAME": "mailer",
            "NOTIFICATION_SMTP_PASSWORD_FILE": str(tmp_path / "smtp-password"),
        }
        up = start_up(env=environment(**exported), cwd=standins)
        await asyncio.to_thread(up.wait_for, "Press Ctrl-C to stop.", 90)
        [hello] = await asyncio.to_thread(wait_for_mail, tmp_path / "external", 1)
        env = process_env(up.service_pids()["notification"])
        code = await asyncio.to_thread(up.interrupt)
    assert hello.booking_id == STANDIN_BOOKING
    assert {key: env.get(key) for key in exported} == exported
    assert f"mail         emails go to the SMTP server {server.host}:{server.port}" in up.output
    assert re.search(rf"^  mail\s+sent to {server.host}:{server.port}", up.output, re.M)
    assert "sink" not in up.output
    assert not (tmp_path / "var" / "mail").exists()
    assert_stopped_cleanly(up, code)
