"""Settings of the services; each service subclasses one of these with its env prefix.

``ServiceSettings`` holds what every service reads (NATS, its database, logging,
shutdown); ``ConsumerSettings`` adds what ``choreo.runtime`` reads for a service
that consumes events and owns a stream (booking, payment): its health endpoint,
schema migrations, stream limits, consumers and inbox. A service's class thus
has only the settings it reads.

Read once at start-up (``Settings()``), then passed down explicitly. A value
that fails validation stops the process with a message naming the variable, and
so does a variable with the service's prefix that names none of its settings
(a typo, or a setting of another kind of service): it would otherwise be
silently ignored. Only the service's own prefix is looked at, so one environment
may hold the variables of several services.

Credentials may also come from files: when ``CHOREO_SECRETS_DIR`` names a
directory, each file in it named like a setting's environment variable (for
example ``BOOKING_NATS_PASSWORD``) provides that setting, as a Kubernetes
Secret volume mounts them. Environment variables win over files; surrounding
whitespace (the trailing newline of most secret files) is stripped.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SecretsSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

#: Environment variable naming the directory of secret files (unset: no files are read).
SECRETS_DIR_ENV = "CHOREO_SECRETS_DIR"

MIB = 1024 * 1024
#: ``<PREFIX>_STREAM_MAX_BYTES`` unless set: 1 GiB, about two million facts. BOOKING, PAYMENT and
#: the DLQ fit (reserved) in a 10 GiB JetStream volume with room to raise one of them.
DEFAULT_STREAM_MAX_BYTES = 1024 * MIB
#: ``<PREFIX>_STREAM_MAX_MSG_SIZE`` unless set: NATS's default ``max_payload``; facts are ~1 KiB.
DEFAULT_STREAM_MAX_MSG_SIZE = 1 * MIB


def secrets_dir_from_env() -> Path | None:
    """The directory named by ``CHOREO_SECRETS_DIR``, or None when it is unset or empty.

    Raises:
        SettingsError: It names something that is not an existing directory. A
            missing mount must stop the service rather than let it start without
            its credentials.
    """
    value = os.environ.get(SECRETS_DIR_ENV, "")
    if not value:
        return None
    path = Path(value)
    if not path.is_dir():
        raise SettingsError(f"{SECRETS_DIR_ENV}={value!r} is not a directory (is the secret volume mounted?)")
    return path


def readable_file(value: str | None) -> str | None:
    """A settings validator's check of a file setting: ``value`` unchanged, if it can be read.

    Checked at start-up: a missing mount stops the service with the variable's name,
    instead of failing later at each use (a reconnect loop, each email).
    """
    if value is not None:
        try:
            Path(value).open("rb").close()
        except OSError as exc:
            raise ValueError(f"cannot read {value!r}: {exc.strerror or exc}") from None
    return value


class ServiceSettings(BaseSettings):
    """What every service reads. Environment variables are ``<PREFIX>_<FIELD>``."""

    # A rejected value is never echoed: it may be a password or a key.
    model_config = SettingsConfigDict(extra="ignore", frozen=True, hide_input_in_errors=True)

    service_name: str = "service"
    #: One or more NATS URLs, comma-separated (any node of a cluster will do).
    nats_url: str = "nats://127.0.0.1:4222"
    nats_user: str | None = None
    nats_password: SecretStr | None = None
    #: Path to a NATS .creds file (JWT auth), as mounted from a Secret.
    nats_creds: str | None = None
    #: SQLAlchemy URL; ``sqlite+aiosqlite:///path.db`` or ``postgresql+asyncpg://...``.
    database_url: str = "sqlite+aiosqlite:///./var/service.db"
    #: Replicas of the streams this service creates (its own, the DLQ; 1 locally, 3 on a cluster).
    stream_replicas: int = Field(default=1, ge=1, le=5)
    log_level: str = "INFO"
    #: ``json`` (one object per line) or ``text``.
    log_format: str = "json"
    #: Seconds allowed for in-flight work to finish on SIGTERM.
    shutdown_grace_seconds: float = Field(default=10.0, ge=0)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Environment first, then the files of ``CHOREO_SECRETS_DIR`` (see the module doc).

        Raises:
            UnknownVariablesError: A variable with the prefix names no setting.
        """
        unknown = unknown_variables(settings_cls, os.environ)
        if unknown:
            raise UnknownVariablesError(unknown)
        secrets_dir = secrets_dir_from_env()
        if secrets_dir is None:
            return init_settings, env_settings, dotenv_settings, file_secret_settings
        # File names are matched case-insensitively against `<env_prefix><FIELD>` (the
        # settings are not case-sensitive), so BOOKING_NATS_PASSWORD names nats_password.
        files = SecretsSettingsSource(settings_cls, secrets_dir=secrets_dir)
        return init_settings, env_settings, dotenv_settings, files

    @field_validator("nats_url")
    @classmethod
    def _check_urls(cls, value: str) -> str:
        urls = [u.strip() for u in value.split(",") if u.strip()]
        if not urls:
            raise ValueError("at least one NATS URL is required")
        for url in urls:
            if not url.startswith(("nats://", "tls://", "ws://", "wss://")):
                raise ValueError(f"not a NATS URL: {url!r}")
        return ",".join(urls)

    @field_validator("log_format")
    @classmethod
    def _check_format(cls, value: str) -> str:
        if value not in ("json", "text"):
            raise ValueError("must be 'json' or 'text'")
        return value

    @property
    def nats_servers(self) -> list[str]:
        return self.nats_url.split(",")

    #: SQLite only: ``FULL`` fsyncs each commit before its ack or reply goes out, so a
    #: power cut loses nothing acknowledged; ``NORMAL`` is faster (measured in
    #: scripts/sqlite_synchronous.py) but a power cut may roll back the last commits
    #: after their acks and replies went out.
    sqlite_synchronous: Literal["FULL", "NORMAL"] = "FULL"

    @field_validator("sqlite_synchronous", mode="before")
    @classmethod
    def _upper_synchronous(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    # NATS client TLS (choreo.tlsconfig). Unset: the connection is as the URL and the server
    # make it (plain TCP for nats://). Set: TLS from the first byte (handshake first), the
    # server verified against the CA, and with a certificate and key, mutual TLS.
    #: PEM bundle of the CA(s) that signed the NATS servers' certificates (default: the system's).
    nats_tls_ca_file: str | None = None
    #: PEM certificate this service presents to NATS (mutual TLS); needs the key too.
    nats_tls_cert_file: str | None = None
    #: PEM private key of that certificate.
    nats_tls_key_file: str | None = Field(default=None, validate_default=True)

    @field_validator("nats_tls_ca_file", "nats_tls_cert_file", "nats_tls_key_file", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("nats_tls_ca_file", "nats_tls_cert_file", "nats_tls_key_file")
    @classmethod
    def _readable_file(cls, value: str | None) -> str | None:
        return readable_file(value)

    @field_validator("nats_tls_key_file")
    @classmethod
    def _cert_and_key_together(cls, value: str | None, info: ValidationInfo) -> str | None:
        if "nats_tls_cert_file" not in info.data:
            return value  # the certificate itself failed, and is reported
        if (info.data["nats_tls_cert_file"] is None) != (value is None):
            prefix = cls.model_config.get("env_prefix", "")
            raise ValueError(f"set both {prefix}NATS_TLS_CERT_FILE and {prefix}NATS_TLS_KEY_FILE, or neither")
        return value

    @property
    def nats_tls(self) -> bool:
        """Whether any NATS TLS setting is given (the connection is then TLS only)."""
        return any((self.nats_tls_ca_file, self.nats_tls_cert_file, self.nats_tls_key_file))


class ConsumerSettings(ServiceSettings):
    """What ``choreo.runtime`` reads besides: a service that consumes events and owns a stream.

    Booking and payment: their health endpoint, schema migrations, the limits of the
    stream they own, their durable consumers (``choreo.consumer``) and their inbox.
    """

    #: Port of the HTTP health endpoint (/healthz, /readyz); 0 disables it.
    health_port: int = Field(default=0, ge=0, le=65535)
    health_host: str = "0.0.0.0"
    #: ``auto``: bring the database's schema to this release at start-up (replicas take turns);
    #: ``check``: only verify it and refuse to start while it is behind (a migration Job,
    #: ``python -m choreo.migrate SERVICE``, upgrades it).
    migrate: Literal["auto", "check"] = "auto"
    #: Most bytes the stream this service owns may hold (JetStream ``max_bytes``). A full stream
    #: refuses publishes (``discard=new``, history is never dropped to make room): the outbox keeps
    #: the facts and alerts (``choreo.outbox``). JetStream reserves it from the server's storage.
    stream_max_bytes: int = Field(default=DEFAULT_STREAM_MAX_BYTES, ge=1)
    #: Largest message the stream accepts (``max_msg_size``); a larger fact is parked by the outbox.
    stream_max_msg_size: int = Field(default=DEFAULT_STREAM_MAX_MSG_SIZE, ge=1, le=64 * MIB)
    #: Age after which JetStream deletes a fact (``max_age``); 0 keeps the history forever, the
    #: default, since a rebuild by replay (``choreo.recovery``) needs it from the first fact.
    stream_max_age_seconds: float = Field(default=0.0, ge=0)
    #: Messages fetched (and committed in one transaction) per consumer round.
    batch_size: int = Field(default=256, ge=1, le=10_000)
    #: Failed (or process-crashing) runs before an event is dead-lettered; transient
    #: failures (database or provider unavailable) are retried without a limit.
    max_deliveries: int = Field(default=5, ge=1, le=100)
    #: Time before JetStream redelivers an event nobody said is in progress.
    ack_wait_seconds: float = Field(default=30.0, gt=0)
    #: First delay before a failed event is retried (it doubles up to the maximum).
    retry_backoff_seconds: float = Field(default=0.5, gt=0)
    #: Longest delay between retries of a failed event.
    retry_backoff_max_seconds: float = Field(default=30.0, gt=0)
    #: Longest a fact's run (its ``prepare`` step, or its handlers' transaction) may take; a
    #: run past it counts as a failed run. Must exceed the slowest answer of a provider.
    run_timeout_seconds: float = Field(default=120.0, gt=0)
    #: Seconds an inbox row (a handled fact's id) is kept to recognise a late copy (choreo.inbox);
    #: at least 10 minutes, well past JetStream's 2-minute de-duplication window and the ack wait.
    inbox_retention_seconds: float = Field(default=7 * 24 * 3600.0, ge=600)


#: Suffixes of the variables Kubernetes sets in every pod for each Service of its namespace
#: (``<SERVICE>_SERVICE_HOST``, ``<SERVICE>_PORT_8080_TCP``...), unless ``enableServiceLinks: false``.
_SERVICE_LINK = re.compile(
    r"(SERVICE_HOST|SERVICE_PORT(_.+)?|PORT(_\d+_(TCP|UDP|SCTP)(_PROTO|_PORT|_ADDR)?)?)"
)


class UnknownVariablesError(SettingsError):
    """Variables with a service's prefix that name none of its settings.

    Attributes:
        problems: One line per variable, starting with its name (``unknown_variables``).
    """

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def unknown_variables(settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> list[str]:
    """What is wrong with each variable of ``environ`` that has the class's prefix but names no setting.

    One line per variable, starting with its name (never its value: it may be a secret). A
    class without a prefix reads no variables of its own and finds none unknown. Names are
    compared without case, as the settings read them.
    """
    prefix = str(settings_cls.model_config.get("env_prefix", "")).upper()
    if not prefix:
        return []
    known = {prefix + field.upper() for field in settings_cls.model_fields}
    problems = []
    for name in sorted(n for n in environ if n.upper().startswith(prefix) and n.upper() not in known):
        problem = f"{name}: not a setting of {settings_cls.__name__}"
        close = difflib.get_close_matches(name.upper(), known, n=1, cutoff=0.85)
        if close:
            problem += f" (did you mean {close[0]}?)"
        elif _SERVICE_LINK.fullmatch(name.upper().removeprefix(prefix)):
            problem += " (a Kubernetes service link? set enableServiceLinks: false in the pod)"
        else:
            problem += "; unset it"
        problems.append(problem)
    return problems
