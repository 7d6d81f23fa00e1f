"""Sending one email through the SMTP server (aiosmtplib), and what its answer means.

``Mailer.send`` connects (plain, STARTTLS or TLS), logs in when a username is
set, sends, and says whether the server accepted the message or refused it for
good. Its failures are classified for the consumer (``choreo.errors``):

- the server is down, slow, drops the connection, or answers 4xx: ``SmtpUnavailable``
  (a ``TransientError``): the fact is retried with backoff for as long as that lasts;
- the server refuses the recipient or the message with a 5xx reply (an unknown
  mailbox, a message it will never take; ``about_the_mail``): not an error, a
  ``Refused`` result, which the handler records and publishes; it is not retried;
- the server refuses *us* (5xx to the login, to the sender, to EHLO, a policy refusal
  such as relaying denied (5.7.x) even at RCPT or DATA; STARTTLS
  missing; a certificate that does not verify; TLS spoken to a plain port):
  ``SmtpConfigurationError``, a failure
  the consumer counts: retried a few times, then dead-lettered, so the facts wait in
  the DLQ (re-drivable) while an operator fixes the settings.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib

from choreo.errors import TransientError
from notification.settings import SmtpConfig

log = logging.getLogger(__name__)

#: SMTP sessions open at once: a batch's emails are sent concurrently, not all at once.
MAX_SESSIONS = 8
#: A 5xx reply to RCPT or DATA that is about us, not about the recipient or the message.
_AUTH_REQUIRED = 530


class SmtpUnavailable(TransientError):
    """The SMTP server cannot take the message now (down, timeout, 4xx): retry later."""


class SmtpConfigurationError(Exception):
    """The SMTP server refuses this service (its login, sender or TLS): a setting to fix.

    Neither transient nor permanent for the consumer: retried a few times, then
    dead-lettered, so nothing is lost and the facts can be re-driven once fixed.
    """


@dataclass(frozen=True, slots=True)
class Accepted:
    """The server took the message; ``reply`` is its answer (``250 2.0.0 Ok: queued``)."""

    reply: str


@dataclass(frozen=True, slots=True)
class Refused:
    """The server refused the recipient or the message for good; ``reply`` is its answer."""

    reply: str


SendResult = Accepted | Refused


#: An address in a server's reply (``<alice@example.com>``): kept out of logs, the DLQ and facts.
_ADDRESS = re.compile(r"<?[^\s<>@;,]+@[^\s<>;,]+>?")
#: An enhanced status code (RFC 3463): class.subject.detail.
_ENHANCED = re.compile(r"\b[245]\.(\d{1,3})\.(\d{1,3})\b")


def _reply(code: int, message: str) -> str:
    return _ADDRESS.sub("<address>", f"{code} {' '.join(message.split())}")[:500]


def about_the_mail(code: int, message: str) -> bool:
    """Whether a 5xx reply refuses the recipient or the message itself (not this service).

    With an enhanced code (RFC 3463): addressing (5.1.x, but 5.1.7/5.1.8, the sender's address),
    the mailbox (5.2.x), a message too big (5.3.4), no route to the recipient's domain (5.4.4)
    and its content (5.6.x). Policy and security (5.7.x: relaying denied, sender not allowed),
    protocol (5.5.x) and the rest are about us: a setting to fix, so the fact is dead-lettered
    and re-drivable rather than recorded as refused for good. Without one: the classic
    mailbox refusals 550 to 553.
    """
    found = _ENHANCED.search(message)
    if found is None:
        return code in (550, 551, 552, 553)
    subject, detail = int(found.group(1)), int(found.group(2))
    return (
        (subject == 1 and detail not in (7, 8)) or subject in (2, 6) or (subject, detail) in ((3, 4), (4, 4))
    )


def _tls_context(ca_file: str | None) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca_file)


#: TLS errors of a connection cut short, not of a TLS the two sides cannot agree on.
_TLS_CUT_SHORT = (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


def _tls_failure(exc: BaseException) -> ssl.SSLError | None:
    """The TLS error behind ``exc`` that no retry can fix (a certificate, a protocol mismatch), if any."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError) and not isinstance(seen, _TLS_CUT_SHORT):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


class Mailer:
    """Sends emails through one SMTP server.

    Args:
        config: The server and how to reach it (``NotificationSettings.smtp()``).
        sender: The envelope sender (the bare ``From`` address).
        local_hostname: The name this client gives in EHLO (default: the machine's).
        deadline_seconds: Longest one ``send`` may take in all, waiting for a session slot
            included (each SMTP step has ``timeout_seconds`` of its own); past it the send is
            ``SmtpUnavailable``. Keep it under the consumer's run timeout, so a relay that
            swallows connections means "retry later", not a hung run.
    """

    def __init__(
        self,
        config: SmtpConfig,
        *,
        sender: str,
        local_hostname: str | None = None,
        deadline_seconds: float | None = None,
    ) -> None:
        self.config = config
        self._deadline = deadline_seconds
        self._sender = sender
        self._hostname = local_hostname or socket.gethostname() or "localhost"
        self._tls = _tls_context(config.ca_file) if config.security != "none" else None
        self._sessions = asyncio.Semaphore(MAX_SESSIONS)

    @property
    def where(self) -> str:
        """``host:port (security)``, for logs."""
        return f"{self.config.host}:{self.config.port} ({self.config.security})"

    async def send(self, message: EmailMessage, recipient: str) -> SendResult:
        """Sends ``message`` to ``recipient``; see the module doc for what each failure raises.

        Raises:
            SmtpUnavailable: The server cannot take it now.
            SmtpConfigurationError: The server refuses this service's login, sender or TLS.
        """
        try:
            async with asyncio.timeout(self._deadline):
                return await self._send(message, recipient)
        except TimeoutError:
            raise SmtpUnavailable(
                f"{self.where} did not take the message within {self._deadline:g}s "
                f"(at most {MAX_SESSIONS} sessions at once)"
            ) from None

    async def _send(self, message: EmailMessage, recipient: str) -> SendResult:
        c = self.config
        async with self._sessions:
            try:
                _, reply = await aiosmtplib.send(
                    message,
                    sender=self._sender,
                    recipients=[recipient],
                    hostname=c.host,
                    port=c.port,
                    username=c.username,
                    password=await self._password(),
                    local_hostname=self._hostname,
                    timeout=c.timeout_seconds,
                    use_tls=c.security == "tls",
                    start_tls=c.security == "starttls",
                    tls_context=self._tls,
                )
            except aiosmtplib.SMTPRecipientsRefused as exc:
                return _judge_refusal([(r.code, r.message) for r in exc.recipients])
            except aiosmtplib.SMTPRecipientRefused as exc:
                return _judge_refusal([(exc.code, exc.message)])
            except aiosmtplib.SMTPDataError as exc:
                return _judge_refusal([(exc.code, exc.message)])
            except aiosmtplib.SMTPAuthenticationError as exc:
                raise SmtpConfigurationError(
                    f"{self.where} refused the login of {c.username!r}: {_reply(exc.code, exc.message)} "
                    "(check NOTIFICATION_SMTP_USERNAME and the password)"
                ) from None
            except aiosmtplib.SMTPResponseException as exc:  # to EHLO, MAIL FROM, the greeting
                if 400 <= exc.code < 500:
                    raise SmtpUnavailable(f"{self.where} answered {_reply(exc.code, exc.message)}") from None
                raise SmtpConfigurationError(
                    f"{self.where} refused this service: {_reply(exc.code, exc.message)}"
                ) from None
            except aiosmtplib.SMTPNotSupported as exc:  # no SMTPUTF8
                raise SmtpConfigurationError(f"{self.where}: {exc.message}") from None
            except (aiosmtplib.SMTPException, OSError) as exc:  # down, timeout, connection lost, TLS
                raise self._failure(exc) from None
        return Accepted(reply)

    async def _password(self) -> str | None:
        """The login's password: the file's current content (a rotation), else the one read at start-up."""
        c = self.config
        if c.username is None:
            return None
        if c.password_file is not None:
            try:
                text = (await asyncio.to_thread(Path(c.password_file).read_text)).strip()
            except OSError as exc:
                log.warning(
                    "cannot read NOTIFICATION_SMTP_PASSWORD_FILE (%s): using the start-up one", exc.strerror
                )
            else:
                if text:
                    return text
        return c.password.get_secret_value() if c.password is not None else None

    def _failure(self, exc: aiosmtplib.SMTPException | OSError) -> Exception:
        """What a failure to talk with the server at all means: for now, or until a setting changes."""
        if type(exc) is aiosmtplib.SMTPException:
            # What this client requires and the server does not offer (STARTTLS, AUTH).
            return SmtpConfigurationError(f"{self.where}: {exc.message}")
        tls = _tls_failure(exc)
        if isinstance(tls, ssl.SSLCertVerificationError):
            return SmtpConfigurationError(
                f"{self.where}: its certificate does not verify ({tls.verify_message}); "
                "set NOTIFICATION_SMTP_CA_FILE to the CA that signed it"
            )
        if tls is not None:
            return SmtpConfigurationError(
                f"{self.where}: no TLS session ({tls.reason or tls}); is NOTIFICATION_SMTP_SECURITY right "
                "for this port (tls: implicit TLS, usually 465; starttls: usually 587)?"
            )
        return SmtpUnavailable(f"{self.where} is unavailable: {type(exc).__name__}: {exc}")


def _judge_refusal(replies: list[tuple[int, str]]) -> SendResult:
    """A refusal of the recipient or the message: for good (5xx) or for now (4xx)."""
    text = "; ".join(_reply(code, message) for code, message in replies)
    if any(code == _AUTH_REQUIRED for code, _ in replies):
        raise SmtpConfigurationError(f"the SMTP server wants a login first: {text}") from None
    if all(500 <= code < 600 for code, _ in replies):
        if all(about_the_mail(code, message) for code, message in replies):
            return Refused(text)
        raise SmtpConfigurationError(f"the SMTP server refused this service's message: {text}") from None
    raise SmtpUnavailable(f"the SMTP server deferred the message: {text}")
