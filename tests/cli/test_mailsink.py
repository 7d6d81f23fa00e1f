"""``choreo up``'s SMTP sink: real SMTP clients (aiosmtplib, smtplib) against it, real files."""

from __future__ import annotations

import asyncio
import smtplib
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default as default_policy
from pathlib import Path

import aiosmtplib
import pytest

from choreoctl.stack.mailsink import MAX_MESSAGE_BYTES, MailSink, MailStore, read_headers
from choreoctl.stack.ports import port_is_free


def message(booking_id: str, subject: str, to: str = "demo@example.com") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "choreo <noreply@choreo.test>"
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{booking_id}.created@choreo.test>"
    msg["X-Choreo-Booking-Id"] = booking_id
    msg["X-Choreo-Correlation-Id"] = f"corr-{booking_id}"
    msg.set_content(f"Booking {booking_id}: plain text\n.\n.. a line with dots\n")
    msg.add_alternative(f"<p>Booking {booking_id}: <b>HTML</b>, ünïcödé</p>", subtype="html")
    return msg


async def test_every_message_is_stored_as_an_eml_file_in_arrival_order(tmp_path: Path) -> None:
    mail = tmp_path / "mail"
    async with MailSink(mail) as sink:
        assert sink.port > 0 and not port_is_free(sink.port, sink.host)
        first = message("b-1", "We received your booking b-1")
        await aiosmtplib.send(first, hostname=sink.host, port=sink.port, start_tls=False, use_tls=False)
        second = message("b-2", "Your booking b-2 is confirmed", to="other@example.com")
        await asyncio.to_thread(_send_with_smtplib, sink.host, sink.port, second)
        assert sink.received == 2
    paths = MailStore(mail).paths()
    assert [p.suffix for p in paths] == [".eml", ".eml"] and len(set(paths)) == 2
    assert sorted(p.name for p in mail.iterdir()) == [p.name for p in paths], "no partial file is left"
    stored = [read_headers(p) for p in paths]
    assert [(m.booking_id, m.subject, m.to) for m in stored] == [
        ("b-1", "We received your booking b-1", "demo@example.com"),
        ("b-2", "Your booking b-2 is confirmed", "other@example.com"),
    ]
    assert stored[0].correlation_id == "corr-b-1"
    # The whole message, as sent (both parts, the dot-stuffed lines restored), after delivery headers.
    parsed = BytesParser(policy=default_policy).parsebytes(paths[0].read_bytes())
    assert parsed["Return-Path"] == "<noreply@choreo.test>"
    assert parsed["Delivered-To"] == "demo@example.com"
    assert parsed["Message-ID"] == "<b-1.created@choreo.test>"
    plain = parsed.get_body(("plain",))
    html = parsed.get_body(("html",))
    assert plain is not None and html is not None
    assert plain.get_content() == "Booking b-1: plain text\n.\n.. a line with dots\n"
    assert "ünïcödé" in html.get_content()


def _send_with_smtplib(host: str, port: int, msg: EmailMessage) -> None:
    with smtplib.SMTP(host, port, timeout=5) as client:
        client.send_message(msg, to_addrs=["other@example.com", "bcc@example.com"])


async def test_envelope_recipients_are_recorded(tmp_path: Path) -> None:
    async with MailSink(tmp_path / "mail") as sink:
        await asyncio.to_thread(_send_with_smtplib, sink.host, sink.port, message("b-3", "s"))
    [path] = MailStore(tmp_path / "mail").paths()
    parsed = BytesParser(policy=default_policy).parsebytes(path.read_bytes())
    assert parsed.get_all("Delivered-To") == ["other@example.com", "bcc@example.com"]


async def test_stop_closes_open_sessions_and_frees_the_port(tmp_path: Path) -> None:
    sink = MailSink(tmp_path / "mail")
    await sink.start()
    port = sink.port
    # A client that keeps its connection open, as a sender reusing one would.
    client = aiosmtplib.SMTP(hostname=sink.host, port=port, start_tls=False, use_tls=False, timeout=5)
    await client.connect()
    await client.ehlo()
    await asyncio.wait_for(sink.stop(), 10)
    assert port_is_free(port, "127.0.0.1")
    with pytest.raises(aiosmtplib.SMTPException):
        await client.noop()
    await sink.stop()  # a second stop is harmless
    assert MailStore(tmp_path / "mail").paths() == []


async def test_a_store_that_cannot_write_refuses_the_message_for_now(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    async with MailSink(blocked / "mail") as sink:
        with pytest.raises(aiosmtplib.SMTPDataError) as refused:
            await aiosmtplib.send(message("b-4", "s"), hostname=sink.host, port=sink.port, start_tls=False)
    assert refused.value.code == 451, "a temporary failure: the sender retries"


async def test_a_message_over_the_size_limit_is_refused_and_not_stored(tmp_path: Path) -> None:
    mail = tmp_path / "mail"
    big = message("b-big", "too big")
    big.add_attachment(b"x" * (MAX_MESSAGE_BYTES + 1), maintype="application", subtype="octet-stream")
    async with MailSink(mail) as sink:
        with pytest.raises(aiosmtplib.SMTPResponseException) as refused:
            await aiosmtplib.send(big, hostname=sink.host, port=sink.port, start_tls=False, use_tls=False)
        assert refused.value.code == 552
        assert sink.received == 0
    assert MailStore(mail).paths() == []
