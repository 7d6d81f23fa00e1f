"""``notification.smtp.Mailer`` against a real SMTP server: security modes, login, what answers mean."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from email.message import EmailMessage
from functools import partial
from pathlib import Path

import pytest
from nats.js import JetStreamContext
from pydantic import SecretStr

from choreo.bus import ensure_stream
from choreo.errors import Failure, classify
from choreoctl.stack.natsserver import NatsServer
from choreoctl.stack.ports import free_port
from notification.build import build
from notification.messages import Kind, Letter, compose
from notification.settings import Security, SmtpConfig
from notification.smtp import (
    Accepted,
    Mailer,
    Refused,
    SmtpConfigurationError,
    SmtpUnavailable,
    about_the_mail,
)
from tests.notification.facts import created
from tests.notification.smtpserver import SmtpServer
from tests.notification.test_service import settings
from tests.streams import BOOKING
from tests.support import eventually, publish, running, stream_count
from tests.tlscerts import CertificateAuthority

SENDER = "bookings@example.com"
TO = "ann@example.com"
LOGINS = {"app": "right-password"}


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority(tmp_path_factory.mktemp("smtp-tls"), "smtp")


@pytest.fixture(scope="module")
def server_tls(ca: CertificateAuthority) -> ssl.SSLContext:
    leaf = ca.issue("smtp-server", client=False)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(leaf.cert, leaf.key)
    return context


def serve(**kwargs: object) -> Iterator[SmtpServer]:
    server = SmtpServer(**kwargs)  # type: ignore[arg-type]
    server.start()
    yield server
    server.stop()


@pytest.fixture
def starttls_server(server_tls: ssl.SSLContext) -> Iterator[SmtpServer]:
    yield from serve(tls=server_tls, logins=LOGINS)


@pytest.fixture
def tls_server(server_tls: ssl.SSLContext) -> Iterator[SmtpServer]:
    yield from serve(tls=server_tls, implicit_tls=True, logins=LOGINS)


def mailer(
    server: SmtpServer,
    security: Security,
    *,
    ca: CertificateAuthority | None = None,
    username: str | None = None,
    password: str | None = None,
    port: int | None = None,
) -> Mailer:
    config = SmtpConfig(
        host=server.host,
        port=port or server.port,
        security=security,
        username=username,
        password=SecretStr(password) if password is not None else None,
        ca_file=str(ca.cert_file) if ca is not None else None,
        timeout_seconds=2,
    )
    return Mailer(config, sender=SENDER, local_hostname="client.example.com")


def email(to: str = TO, fact_id: str = "f1") -> EmailMessage:
    letter = Letter(Kind.NOTIFICATION_KIND_BOOKING_CONFIRMED, "b-1", to, 2500, "EUR")
    return compose(
        letter, sender=f"Bookings <{SENDER}>", message_id=f"<{fact_id}@example.com>", correlation_id="wf-1"
    )


async def test_starttls_with_a_login_delivers(starttls_server: SmtpServer, ca: CertificateAuthority) -> None:
    result = await mailer(starttls_server, "starttls", ca=ca, username="app", password="right-password").send(
        email(), TO
    )
    assert isinstance(result, Accepted) and "queued" in result.reply
    [received] = starttls_server.received
    assert (received.mail_from, received.rcpt_tos, received.message_id) == (SENDER, (TO,), "<f1@example.com>")


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")  # the session is all TLS
async def test_implicit_tls_with_a_login_delivers(tls_server: SmtpServer, ca: CertificateAuthority) -> None:
    result = await mailer(tls_server, "tls", ca=ca, username="app", password="right-password").send(
        email(), TO
    )
    assert isinstance(result, Accepted)
    assert [r.rcpt_tos for r in tls_server.received] == [(TO,)]


async def test_a_wrong_password_is_a_configuration_error_not_a_refusal(
    starttls_server: SmtpServer, ca: CertificateAuthority
) -> None:
    with pytest.raises(SmtpConfigurationError, match="535") as failed:
        await mailer(starttls_server, "starttls", ca=ca, username="app", password="wrong").send(email(), TO)
    assert "wrong" not in str(failed.value)
    # Counted by the consumer: retried a few times, then the DLQ (re-drivable), never "refused".
    assert classify(failed.value) is Failure.UNKNOWN
    assert starttls_server.received == []


async def test_a_certificate_that_does_not_verify_is_a_configuration_error(
    starttls_server: SmtpServer,
) -> None:
    with pytest.raises(SmtpConfigurationError, match="NOTIFICATION_SMTP_CA_FILE") as failed:
        await mailer(starttls_server, "starttls", username="app", password="right-password").send(email(), TO)
    assert classify(failed.value) is Failure.UNKNOWN


async def test_starttls_required_but_not_offered_is_a_configuration_error(smtp: SmtpServer) -> None:
    with pytest.raises(SmtpConfigurationError) as failed:
        await mailer(smtp, "starttls").send(email(), TO)
    assert classify(failed.value) is Failure.UNKNOWN
    assert smtp.received == []


async def test_tls_spoken_to_a_plain_port_is_a_configuration_error(smtp: SmtpServer) -> None:
    with pytest.raises(SmtpConfigurationError, match="NOTIFICATION_SMTP_SECURITY") as failed:
        await mailer(smtp, "tls").send(email(), TO)
    assert classify(failed.value) is Failure.UNKNOWN


async def test_a_server_that_is_down_is_transient() -> None:
    closed = SmtpServer()  # never started: its port refuses connections
    with pytest.raises(SmtpUnavailable) as failed:
        await mailer(closed, "none", port=free_port()).send(email(), TO)
    assert classify(failed.value) is Failure.TRANSIENT


async def test_a_deferral_is_transient(smtp: SmtpServer) -> None:
    smtp.recorder.defer_all = "451 4.3.0 try again later"
    with pytest.raises(SmtpUnavailable, match="451") as failed:
        await mailer(smtp, "none").send(email(), TO)
    assert classify(failed.value) is Failure.TRANSIENT


async def test_a_mailbox_refused_for_good_is_a_refusal_with_the_reply(smtp: SmtpServer) -> None:
    smtp.refuse("nobody@example.com")
    result = await mailer(smtp, "none").send(email("nobody@example.com"), "nobody@example.com")
    assert isinstance(result, Refused)
    # The server's reply, without the address in it (logs, the DLQ and facts keep none).
    assert result.reply == "550 5.1.1 <address>: no such user"


@pytest.mark.parametrize(
    "reply",
    [
        "554 5.7.1 <bob@example.org>: Relay access denied",
        "504 5.5.2 <no-reply@localhost>: Sender address rejected: need fully-qualified address",
        "553 5.1.8 <no-reply@localhost>: Sender address rejected: Domain not found",
        "550 5.7.60 SMTP; Client does not have permissions to send as this sender",
        "554 Transaction failed",
    ],
)
async def test_a_refusal_of_this_service_at_rcpt_is_a_configuration_error(
    smtp: SmtpServer, reply: str
) -> None:
    """Not the recipient's fault: dead-lettered (re-drivable once fixed), never recorded as refused."""
    smtp.refuse("bob@example.org", reply)
    with pytest.raises(SmtpConfigurationError, match=reply.split()[0]) as failed:
        await mailer(smtp, "none").send(email("bob@example.org"), "bob@example.org")
    assert "@" not in str(failed.value).replace("no-reply@", "")  # the addresses are masked
    assert classify(failed.value) is Failure.UNKNOWN  # counted: retried a few times, then the DLQ


@pytest.mark.parametrize(
    ("code", "message", "refused"),
    [
        (550, "5.1.1 no such user", True),
        (552, "5.2.2 mailbox full", True),
        (552, "5.3.4 message too big", True),
        (550, "5.6.0 content rejected", True),
        (550, "no such user here", True),
        (554, "5.7.1 relaying denied", False),
        (550, "5.1.7 bad sender address", False),
        (501, "5.5.4 syntax", False),
        (554, "transaction failed", False),
    ],
)
def test_which_refusals_are_about_the_mail(code: int, message: str, refused: bool) -> None:
    assert about_the_mail(code, message) is refused


async def test_a_login_required_before_mail_is_a_configuration_error(
    starttls_server: SmtpServer, ca: CertificateAuthority
) -> None:
    with pytest.raises(SmtpConfigurationError, match="530") as failed:
        await mailer(starttls_server, "starttls", ca=ca).send(email(), TO)
    assert classify(failed.value) is Failure.UNKNOWN


def test_the_config_repr_never_shows_the_password() -> None:
    config = SmtpConfig("h", 587, "starttls", "app", SecretStr("hunter2"), None, 5)
    assert "hunter2" not in repr(config) and "hunter2" not in str(config)


async def test_a_wrong_password_sends_the_facts_to_the_dlq_where_they_can_be_redriven(
    nats_server: NatsServer,
    database_url: str,
    js: JetStreamContext,
    starttls_server: SmtpServer,
    ca: CertificateAuthority,
) -> None:
    await ensure_stream(js, BOOKING)
    cfg = settings(nats_server, database_url, starttls_server).model_copy(
        update={
            "smtp_security": "starttls",
            "smtp_username": "app",
            "smtp_password": SecretStr("wrong"),
            "smtp_ca_file": str(ca.cert_file),
        }
    )
    env = created("b-535", "gus@example.com")
    async with running(build(cfg)):
        await publish(js, env)
        await eventually(partial(dlq_count, js), timeout=15, message="the fact in the DLQ")
    assert starttls_server.received == []
    assert await stream_count(js, "NOTIFICATION") == 0
    dead = await js.get_msg("DLQ", 1)
    assert dead.headers is not None and "535" in str(dead.headers)


async def dlq_count(js: JetStreamContext) -> int:
    return await stream_count(js, "DLQ")


async def test_a_rotated_password_file_is_read_at_the_next_login(
    starttls_server: SmtpServer, ca: CertificateAuthority, tmp_path: Path
) -> None:
    """The kubelet rewrites a mounted Secret in place: the next email logs in with the new password."""
    secret = tmp_path / "NOTIFICATION_SMTP_PASSWORD"
    secret.write_text("old-password\n")
    config = SmtpConfig(
        host=starttls_server.host,
        port=starttls_server.port,
        security="starttls",
        username="app",
        password=SecretStr("old-password"),
        ca_file=str(ca.cert_file),
        timeout_seconds=2,
        password_file=str(secret),
    )
    sender = Mailer(config, sender=SENDER, local_hostname="client.example.com")
    with pytest.raises(SmtpConfigurationError, match="535"):
        await sender.send(email(), TO)
    secret.write_text("right-password\n")  # rotated, no restart
    assert isinstance(await sender.send(email(fact_id="f2"), TO), Accepted)
    secret.unlink()  # unreadable for a while: the start-up password is used
    with pytest.raises(SmtpConfigurationError, match="535"):
        await sender.send(email(fact_id="f3"), TO)
