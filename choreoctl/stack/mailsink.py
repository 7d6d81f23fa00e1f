"""The SMTP sink of ``choreo up``: a local SMTP server that keeps every message as a ``.eml`` file.

When ``NOTIFICATION_SMTP_HOST`` is not exported, ``choreo up`` runs one on
127.0.0.1 (a free port) and points the notification service at it with
``NOTIFICATION_SMTP_SECURITY=none``: every email the system sends lands in
``DIR/mail`` instead of a mailbox. The server is aiosmtpd's SMTP protocol, served
in ``choreo up``'s own event loop; it accepts any sender and recipient and
delivers like an MTA would: the message as received, after a ``Return-Path``
and one ``Delivered-To`` per envelope recipient, with local (LF) line ends.

Each message is one file, ``<UTC time>-<random>.eml``: names sort in arrival
order, and a file appears complete or not at all (written beside, then renamed),
so a reader (``choreo up --demo``) never sees half a message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import time
from dataclasses import dataclass
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default as default_policy
from pathlib import Path
from types import TracebackType

from aiosmtpd.smtp import SMTP, Envelope, Session

logger = logging.getLogger(__name__)

#: The directory of a data directory holding the messages.
MAIL_DIR = "mail"
SUFFIX = ".eml"
#: Largest message the sink takes (SMTP SIZE); a larger one is refused with 552.
MAX_MESSAGE_BYTES = 1024 * 1024


class MailStore:
    """A directory of ``.eml`` files, one per message, named in arrival order.

    Args:
        directory: Created on the first message.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def save(self, content: bytes, mail_from: str, rcpt_tos: list[str]) -> Path:
        """Writes one message with its delivery headers; returns its file."""
        self.directory.mkdir(parents=True, exist_ok=True)
        now = time.time()
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f".{int(now % 1 * 1_000_000):06d}Z"
        path = self.directory / f"{stamp}-{secrets.token_hex(4)}{SUFFIX}"
        trace = [f"Return-Path: <{mail_from}>", *(f"Delivered-To: {rcpt}" for rcpt in rcpt_tos)]
        partial = path.with_suffix(".part")
        # Local line ends, as a Maildir delivery writes them (SMTP sends CRLF).
        text = "".join(f"{line}\n" for line in trace).encode() + content.replace(b"\r\n", b"\n")
        partial.write_bytes(text)
        os.replace(partial, path)
        return path

    def paths(self) -> list[Path]:
        """The stored messages, oldest first."""
        if not self.directory.is_dir():
            return []
        return sorted(self.directory.glob(f"*{SUFFIX}"))


@dataclass(frozen=True)
class StoredMail:
    """The headers of one stored message that a reader looks at."""

    path: Path
    subject: str
    to: str
    booking_id: str
    correlation_id: str


def read_headers(path: Path) -> StoredMail:
    """Parses the headers of a stored message (the body is not read into the result)."""
    message = BytesParser(policy=default_policy).parsebytes(path.read_bytes(), headersonly=True)
    assert isinstance(message, EmailMessage)  # the default policy makes EmailMessages
    return StoredMail(
        path=path,
        subject=str(message.get("Subject", "")),
        to=str(message.get("To", "")),
        booking_id=str(message.get("X-Choreo-Booking-Id", "")).strip(),
        correlation_id=str(message.get("X-Choreo-Correlation-Id", "")).strip(),
    )


class _Handler:
    """aiosmtpd's handler: stores each accepted message."""

    def __init__(self, store: MailStore) -> None:
        self.store = store
        self.received = 0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        try:
            path = await asyncio.to_thread(
                self.store.save, content, envelope.mail_from or "", list(envelope.rcpt_tos)
            )
        except OSError as exc:
            logger.error("could not store a message: %s", exc)
            return "451 Requested action aborted: local error in processing"
        self.received += 1
        logger.info("stored %s for %s", path.name, ", ".join(envelope.rcpt_tos))
        return "250 Message accepted for delivery"


class _TrackedSession(SMTP):
    """One SMTP connection, listed in ``sessions`` while it is open (so a stop can close it)."""

    def __init__(self, handler: _Handler, sessions: set[SMTP]) -> None:
        # A fixed name: the default looks up this host's FQDN, which may wait on DNS.
        # At most 1 MiB a message (the service's emails are a few KiB): anyone on this machine
        # may mail the sink, and aiosmtpd's default (32 MiB) would let them fill the disk fast.
        super().__init__(
            handler,
            hostname="choreo-up-mail-sink",
            data_size_limit=MAX_MESSAGE_BYTES,
            loop=asyncio.get_running_loop(),
        )
        self._sessions = sessions

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._sessions.add(self)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        self._sessions.discard(self)
        super().connection_lost(error)


class MailSink:
    """An SMTP server on ``host`` storing every message in ``directory``.

    Use ``async with MailSink(...) as sink`` (or ``start``/``stop``).

    Args:
        directory: Where messages are stored (``MailStore``).
        host: Address to listen on (loopback: anyone reaching it may send mail).
        port: 0 for a free port (read ``port`` once started).
    """

    def __init__(self, directory: Path, host: str = "127.0.0.1", port: int = 0) -> None:
        self.store = MailStore(directory)
        self.host = host
        self.port = port
        self._handler = _Handler(self.store)
        self._server: asyncio.Server | None = None
        self._sessions: set[SMTP] = set()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def received(self) -> int:
        """Messages stored since the start."""
        return self._handler.received

    def _protocol(self) -> SMTP:
        return _TrackedSession(self._handler, self._sessions)

    async def start(self) -> None:
        """Listens; ``port`` is then the one bound."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._protocol, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stops listening and closes the open sessions (their clients see the connection end)."""
        if self._server is None:
            return
        self._server.close()
        for session in list(self._sessions):
            if session.transport is not None:
                session.transport.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._server.wait_closed(), 5)
        # Let the closed sessions' tasks see their connections end.
        await asyncio.sleep(0)
        self._server = None

    async def __aenter__(self) -> MailSink:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
