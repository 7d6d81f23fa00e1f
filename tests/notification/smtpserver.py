"""A real SMTP server for the tests (aiosmtpd, in a thread of its own) that records what it receives.

It can be told to refuse a recipient (``refuse``), to defer everything (4xx,
``defer_all``), to take its time (``delay_seconds``), and be stopped and started
again on the same port. With a TLS context it offers STARTTLS (or speaks TLS from
the first byte with ``implicit_tls``); with ``logins`` it requires AUTH.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
from collections import Counter
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from choreoctl.stack.ports import free_port


@dataclass(frozen=True)
class Received:
    """One message the server accepted."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    message: EmailMessage

    @property
    def message_id(self) -> str:
        return str(self.message["Message-ID"])

    def part(self, subtype: str) -> str:
        """The text of the ``text/<subtype>`` part."""
        body = self.message.get_body(preferencelist=(subtype,))
        assert body is not None and body.get_content_type() == f"text/{subtype}", f"no text/{subtype} part"
        return str(body.get_content())


class Recorder:
    """The aiosmtpd handler: records accepted messages, refuses what it is told to."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._received: list[Received] = []
        self.refusals: dict[str, str] = {}
        self.refused: Counter[str] = Counter()
        self.defer_all = ""
        self.delay_seconds = 0.0

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        if self.defer_all:
            return self.defer_all
        refusal = self.refusals.get(address)
        if refusal is not None:
            with self._lock:
                self.refused[address] += 1
            return refusal
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.delay_seconds:
            await asyncio.sleep(self.delay_seconds)
        message = BytesParser(policy=policy.default).parsebytes(envelope.content)
        assert isinstance(message, EmailMessage)
        with self._lock:
            self._received.append(Received(envelope.mail_from, tuple(envelope.rcpt_tos), message))
        return "250 2.0.0 Ok: queued"

    @property
    def received(self) -> list[Received]:
        with self._lock:
            return list(self._received)


class SmtpServer:
    """A recording SMTP server on 127.0.0.1 and a free port; ``stop`` and ``start`` keep the port.

    Args:
        tls: The server's TLS context: STARTTLS is offered (and required), or with
            ``implicit_tls`` the connection is TLS from the first byte.
        logins: Username -> password; AUTH is then required before MAIL.
    """

    def __init__(
        self,
        *,
        tls: ssl.SSLContext | None = None,
        implicit_tls: bool = False,
        logins: dict[str, str] | None = None,
    ) -> None:
        self.host = "127.0.0.1"
        self.port = free_port()
        self.recorder = Recorder()
        self._tls = tls
        self._implicit = implicit_tls
        self._logins = logins
        self._controller: Controller | None = None

    def _authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        assert self._logins is not None
        if isinstance(data, LoginPassword):
            user, password = data.login.decode(), data.password.decode()
            if self._logins.get(user) == password:
                return AuthResult(success=True)
        return AuthResult(success=False, handled=False)

    def start(self) -> None:
        kwargs: dict[str, Any] = {}
        if self._tls is not None and self._implicit:
            kwargs["ssl_context"] = self._tls
        elif self._tls is not None:
            kwargs |= {"tls_context": self._tls, "require_starttls": True}
        if self._logins is not None:
            kwargs |= {"authenticator": self._authenticate, "auth_required": True}
            # With implicit TLS the whole session is encrypted (aiosmtpd only counts STARTTLS).
            kwargs["auth_require_tls"] = self._tls is not None and not self._implicit
        self._controller = Controller(
            self.recorder, hostname=self.host, port=self.port, server_hostname="localhost", **kwargs
        )
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            with contextlib.suppress(Exception):
                self._controller.stop()
            self._controller = None

    # What the tests look at.

    @property
    def received(self) -> list[Received]:
        return self.recorder.received

    def refuse(self, address: str, reply: str = "550 5.1.1 <{address}>: no such user") -> None:
        """Refuses ``address`` at RCPT with ``reply`` from now on."""
        self.recorder.refusals[address] = reply.format(address=address)

    def message_ids(self) -> list[str]:
        return [r.message_id for r in self.received]
