"""Configuration of the notification service (environment variables ``NOTIFICATION_*``)."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from email.headerregistry import Address
from email.utils import parseaddr
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import SettingsConfigDict, SettingsError

from choreo.settings import ConsumerSettings, readable_file

PREFIX = "NOTIFICATION_"
#: The variable naming the SMTP server; the service refuses to start without it.
SMTP_HOST_ENV = f"{PREFIX}SMTP_HOST"

Security = Literal["starttls", "tls", "none"]

_DOMAIN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}\.?)*")


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine (a password may then cross it unencrypted)."""
    if host.lower() in ("localhost", "localhost.localdomain") or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    """How to reach the SMTP server, as ``notification.smtp.Mailer`` needs it.

    Attributes:
        host: The server's name or address.
        port: Its port (587 for STARTTLS, 465 for TLS, 25 for a local relay).
        security: ``starttls`` (required, the connection is refused without it), ``tls``
            (TLS from the first byte) or ``none``.
        username: Login name; no authentication when empty.
        password: Its password (never logged).
        ca_file: PEM bundle of the CA(s) that signed the server's certificate (default: the system's).
        timeout_seconds: Longest wait for the server at each step.
        password_file: Where the password is read again before each login (a mounted Secret
            the kubelet updates): a rotated password needs no restart. ``password`` is the
            value read at start-up, used while the file cannot be read.
    """

    host: str
    port: int
    security: Security
    username: str | None
    password: SecretStr | None
    ca_file: str | None
    timeout_seconds: float
    password_file: str | None = None

    def __repr__(self) -> str:  # never the password, not even masked by chance
        return (
            f"SmtpConfig(host={self.host!r}, port={self.port}, security={self.security!r}, "
            f"username={self.username!r}, ca_file={self.ca_file!r}, timeout={self.timeout_seconds})"
        )


class NotificationSettings(ConsumerSettings):
    """Notification service settings; see ``choreo.settings.ConsumerSettings`` for the common ones."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, extra="ignore", frozen=True)

    service_name: str = "notification"
    database_url: str = "sqlite+aiosqlite:///./var/notification.db"
    health_port: int = 8083

    #: The SMTP server. No default: the service refuses to start without it.
    smtp_host: str | None = None
    smtp_port: int = Field(default=587, ge=1, le=65535)
    #: ``starttls`` (default; the server must offer it), ``tls`` (implicit TLS, usually port 465)
    #: or ``none`` (plain text: a relay on this machine or the cluster's own network).
    smtp_security: Security = "starttls"
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    #: A file holding the password (a mounted Secret), instead of ``NOTIFICATION_SMTP_PASSWORD``.
    smtp_password_file: str | None = None
    #: PEM bundle of the CA(s) that signed the SMTP server's certificate (default: the system's).
    smtp_ca_file: str | None = None
    smtp_timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    #: The ``From`` of every email.
    mail_from: str = "Choreo Bookings <no-reply@localhost>"
    #: The right-hand side of each ``Message-ID`` (``<fact-id@domain>``); default: ``mail_from``'s domain.
    message_id_domain: str | None = None
    #: Facts older than this are not emailed about (recorded as skipped): a new deployment that
    #: replays the booking history must not email last year's users. 0: no limit.
    max_fact_age_seconds: float = Field(default=86_400.0, ge=0)
    #: How long after its fact an email is retried while the SMTP server is down or answers
    #: 4xx (with the consumer's backoff); past it the fact is dead-lettered, to be re-driven
    #: with ``choreo dlq`` once the server is back. 0: retried for as long as it takes.
    smtp_retry_seconds: float = Field(default=3_600.0, ge=0)

    @field_validator(
        "smtp_host", "smtp_username", "smtp_password_file", "smtp_ca_file", "message_id_domain", mode="before"
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("smtp_password", mode="before")
    @classmethod
    def _empty_password_is_unset(cls, value: object) -> object:
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        return None if isinstance(value, str) and not value else value

    @field_validator("smtp_security", mode="before")
    @classmethod
    def _lower_security(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("smtp_password", "smtp_password_file")
    @classmethod
    def _no_password_in_clear_text(cls, value: object, info: ValidationInfo) -> object:
        host, security = info.data.get("smtp_host"), info.data.get("smtp_security")
        if value is not None and security == "none" and not is_loopback(host or ""):
            raise ValueError(
                f"with {PREFIX}SMTP_SECURITY=none the SMTP password would cross the network in clear "
                f"text to {host or '(unset host)'}: use starttls or tls (none is allowed only on loopback)"
            )
        return value

    @field_validator("smtp_password_file", "smtp_ca_file")
    @classmethod
    def _readable_file(cls, value: str | None) -> str | None:
        return readable_file(value)

    @field_validator("mail_from")
    @classmethod
    def _check_from(cls, value: str) -> str:
        _, address = parseaddr(value)
        if "@" not in address or address.startswith("@") or address.endswith("@"):
            raise ValueError("must be an address like 'Bookings <no-reply@example.com>'")
        return value

    @field_validator("message_id_domain")
    @classmethod
    def _check_domain(cls, value: str | None) -> str | None:
        if value is not None and not _DOMAIN.fullmatch(value):
            raise ValueError("must be a domain name like example.com")
        return value

    @model_validator(mode="after")
    def _check_sender_for_a_remote_relay(self) -> NotificationSettings:
        # A relay elsewhere refuses (or spam-folders) a sender at localhost: 504 5.5.2 "need
        # fully-qualified address" at RCPT, for every email. Better to say so at start-up.
        if self.smtp_host and not is_loopback(self.smtp_host) and is_loopback(self.message_domain):
            raise ValueError(
                f"{PREFIX}MAIL_FROM ({self.mail_from!r}) must be an address of a domain the relay "
                f"{self.smtp_host} may send for, not localhost"
            )
        return self

    @model_validator(mode="after")
    def _check_retry_window(self) -> NotificationSettings:
        # Past the age limit an email is skipped as too old: the dead-letter must come first,
        # or an outage longer than the age limit would drop its emails instead of parking them.
        age, retry = self.max_fact_age_seconds, self.smtp_retry_seconds
        if age and (not retry or retry >= age):
            raise ValueError(
                f"{PREFIX}SMTP_RETRY_SECONDS must be set and shorter than {PREFIX}MAX_FACT_AGE_SECONDS "
                f"({age:g}), or an SMTP outage would end in emails skipped as too old"
            )
        return self

    @model_validator(mode="after")
    def _check_credentials(self) -> NotificationSettings:
        if self.smtp_password is not None and self.smtp_password_file is not None:
            raise ValueError(f"set {PREFIX}SMTP_PASSWORD or {PREFIX}SMTP_PASSWORD_FILE, not both")
        has_password = self.smtp_password is not None or self.smtp_password_file is not None
        if has_password and self.smtp_username is None:
            raise ValueError(f"{PREFIX}SMTP_PASSWORD is set but {PREFIX}SMTP_USERNAME is not")
        if self.smtp_username is not None and not has_password:
            raise ValueError(
                f"{PREFIX}SMTP_USERNAME is set but neither {PREFIX}SMTP_PASSWORD nor "
                f"{PREFIX}SMTP_PASSWORD_FILE is"
            )
        return self

    @property
    def mail_from_address(self) -> str:
        """The bare address of ``mail_from`` (the SMTP envelope sender)."""
        return parseaddr(self.mail_from)[1]

    @property
    def message_domain(self) -> str:
        """The domain of the emails' ``Message-ID``."""
        if self.message_id_domain:
            return self.message_id_domain
        domain = Address(addr_spec=self.mail_from_address).domain
        return domain if _DOMAIN.fullmatch(domain) else "localhost"

    def smtp(self) -> SmtpConfig:
        """The SMTP server's settings; ``SettingsError`` naming the variable when the host is unset."""
        if self.smtp_host is None:
            raise SettingsError(
                f"{SMTP_HOST_ENV} is not set: notification sends its emails through that SMTP server "
                f"(with {PREFIX}SMTP_PORT, {PREFIX}SMTP_SECURITY, {PREFIX}SMTP_USERNAME/PASSWORD)"
            )
        password = self.smtp_password
        if self.smtp_password_file is not None:
            try:
                text = Path(self.smtp_password_file).read_text().strip()
            except OSError as exc:
                raise SettingsError(
                    f"{PREFIX}SMTP_PASSWORD_FILE: cannot read {self.smtp_password_file!r}: {exc.strerror}"
                ) from None
            if not text:
                raise SettingsError(f"{PREFIX}SMTP_PASSWORD_FILE: {self.smtp_password_file!r} is empty")
            password = SecretStr(text)
        return SmtpConfig(
            host=self.smtp_host,
            port=self.smtp_port,
            security=self.smtp_security,
            username=self.smtp_username,
            password=password,
            ca_file=self.smtp_ca_file,
            timeout_seconds=self.smtp_timeout_seconds,
            password_file=self.smtp_password_file,
        )
