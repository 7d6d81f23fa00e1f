"""Where ``choreo up`` sends the emails: its SMTP sink, or the exported ``NOTIFICATION_SMTP_*`` server."""

from __future__ import annotations

import contextlib
import io
from dataclasses import replace
from pathlib import Path

import aiosmtplib
import pytest

from choreoctl.stack.console import Console, print_endpoints
from choreoctl.stack.local_stack import open_mail
from choreoctl.stack.mailroute import MailRoute, exported_server, sink_route
from choreoctl.stack.mailsink import MailStore
from choreoctl.stack.ports import port_is_free
from choreoctl.stack.services import Ports, endpoints_for, service_environments
from tests.cli.test_mailsink import message

PORTS = Ports(
    grpc=1, http=2, health={"booking": 3, "payment": 4, "notification": 5, "analytics": 6, "inventory": 7}
)
EXPORTED = {
    "NOTIFICATION_SMTP_HOST": "smtp.example.com",
    "NOTIFICATION_SMTP_PORT": "465",
    "NOTIFICATION_SMTP_SECURITY": "tls",
    "NOTIFICATION_SMTP_USERNAME": "mailer",
    "NOTIFICATION_SMTP_PASSWORD_FILE": "/run/secrets/smtp",
    "NOTIFICATION_MAIL_FROM": "bookings@example.com",
}


def notification_env(environ: dict[str, str], route: MailRoute, tmp_path: Path) -> dict[str, str]:
    envs = service_environments(environ, "nats://n:1", PORTS, tmp_path, None, mail=route)
    return envs["notification"]


def test_an_exported_server_reaches_notification_unchanged(tmp_path: Path) -> None:
    route = exported_server(EXPORTED)
    assert route is not None and route.external
    assert route.server == "smtp.example.com:465"
    env = notification_env(EXPORTED, route, tmp_path)
    assert {key: env[key] for key in EXPORTED} == EXPORTED
    assert "emails go to the SMTP server smtp.example.com:465" in route.describe()
    only_host = exported_server({"NOTIFICATION_SMTP_HOST": "mx.local"})
    assert only_host is not None and only_host.server == "mx.local:587", "the service's default port"


def test_without_a_host_notification_is_pointed_at_the_sink(tmp_path: Path) -> None:
    exported = {k: v for k, v in EXPORTED.items() if k != "NOTIFICATION_SMTP_HOST"}
    assert exported_server(exported) is None
    assert exported_server({"NOTIFICATION_SMTP_HOST": " "}) is None
    route = sink_route(exported, tmp_path / "mail", "127.0.0.1", 2525)
    env = notification_env(exported, route, tmp_path)
    assert env["NOTIFICATION_SMTP_HOST"] == "127.0.0.1"
    assert env["NOTIFICATION_SMTP_PORT"] == "2525"
    assert env["NOTIFICATION_SMTP_SECURITY"] == "none"
    # Credentials and TLS settings meant for another server are not passed to anyone.
    assert route.dropped == (
        "NOTIFICATION_SMTP_PASSWORD_FILE",
        "NOTIFICATION_SMTP_PORT",
        "NOTIFICATION_SMTP_SECURITY",
        "NOTIFICATION_SMTP_USERNAME",
    )
    assert "NOTIFICATION_SMTP_USERNAME" not in env and "NOTIFICATION_SMTP_PASSWORD_FILE" not in env
    assert env["NOTIFICATION_MAIL_FROM"] == "bookings@example.com", "not an SMTP server setting: kept"
    assert str(tmp_path / "mail") in route.describe() and "127.0.0.1:2525" in route.describe()


async def test_open_mail_starts_the_sink_and_the_exit_stops_it(tmp_path: Path) -> None:
    out = io.StringIO()
    async with contextlib.AsyncExitStack() as resources:
        route = await open_mail({"NOTIFICATION_SMTP_USERNAME": "u"}, tmp_path, Console(out), resources)
        assert route.mail_dir == tmp_path / "mail"
        host, port = route.server.split(":")
        assert route.settings == {"SMTP_HOST": host, "SMTP_PORT": port, "SMTP_SECURITY": "none"}
        await aiosmtplib.send(message("b-9", "hello"), hostname=host, port=int(port), start_tls=False)
    assert port_is_free(int(port), host)
    [stored] = MailStore(tmp_path / "mail").paths()
    assert b"X-Choreo-Booking-Id: b-9" in stored.read_bytes()
    console = out.getvalue()
    assert "NOTIFICATION_SMTP_HOST is not set: ignoring NOTIFICATION_SMTP_USERNAME" in console
    assert f"emails are kept in {tmp_path / 'mail'} (*.eml), by the SMTP sink at {route.server}" in console
    assert "SMTP sink stopped (1 emails received)" in console


async def test_open_mail_with_an_exported_server_starts_no_sink(tmp_path: Path) -> None:
    out = io.StringIO()
    async with contextlib.AsyncExitStack() as resources:
        route = await open_mail(EXPORTED, tmp_path, Console(out), resources)
    assert route.external and route.settings == {}
    assert not (tmp_path / "mail").exists()
    assert "emails go to the SMTP server smtp.example.com:465" in out.getvalue()
    assert "sink" not in out.getvalue()


@pytest.mark.parametrize("exported", [False, True], ids=["sink", "exported"])
def test_the_endpoints_say_where_mail_goes(tmp_path: Path, exported: bool) -> None:
    route = exported_server(EXPORTED) if exported else sink_route({}, tmp_path / "mail", "127.0.0.1", 2525)
    assert route is not None
    endpoints = endpoints_for("nats://n:1", PORTS, tmp_path, None)
    out = io.StringIO()
    print_endpoints(Console(out), replace(endpoints, mail=route))
    text = out.getvalue()
    if exported:
        assert "  mail        sent to smtp.example.com:465" in text
    else:
        assert f"  mail        {tmp_path / 'mail'}   (one .eml per email)" in text
        assert "the SMTP sink at 127.0.0.1:2525" in text
    for name in ("notification", "analytics"):
        assert f"  health      {name:<12} http://127.0.0.1:" in text
        assert f"  log         {name:<12} {tmp_path / 'logs' / name}.log" in text
    assert "  stats       http://127.0.0.1:2/v1/stats" in text
