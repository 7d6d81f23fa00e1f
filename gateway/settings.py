"""Configuration of the gateway (environment variables ``GATEWAY_*``)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal, Self
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from choreo.settings import ServiceSettings

_STREAM_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
#: Shortest HS256 secret accepted (RFC 7518 3.2: a key at least as long as the hash).
MIN_HS256_SECRET_BYTES = 32


class GatewaySettings(ServiceSettings):
    """Gateway settings; see ``choreo.settings.ServiceSettings`` for the common ones.

    The gateway consumes no events through ``choreo.runtime`` (its projection has settings of
    its own) and owns no stream, so it has none of ``ConsumerSettings``; its health endpoints
    are on its HTTP port.
    """

    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="ignore", frozen=True)

    service_name: str = "gateway"
    database_url: str = "sqlite+aiosqlite:///./var/gateway.db"
    #: Address the gRPC and HTTP servers bind.
    host: str = "0.0.0.0"
    grpc_port: int = Field(default=50051, ge=0, le=65535)
    http_port: int = Field(default=8080, ge=0, le=65535)
    #: How long CreateBooking waits for the booking service before answering UNAVAILABLE.
    command_timeout_seconds: float = Field(default=5.0, gt=0, le=120)
    #: How long GetBookingStats waits for the analytics service before answering UNAVAILABLE.
    stats_timeout_seconds: float = Field(default=5.0, gt=0, le=120)
    #: Streams projected into the read model and indexed for traces, comma-separated.
    #: The trace reads only CloudEvents headers, so a new service's stream is added here.
    #: A stream that does not exist yet (its service never ran) is waited for: it does not
    #: hold readiness back, and its facts are projected once it appears.
    streams: str = "BOOKING,PAYMENT,NOTIFICATION,INVENTORY"
    #: A read of an unknown booking waits this long for it to reach the read model
    #: (created through another replica) before answering NOT_FOUND.
    not_found_grace_seconds: float = Field(default=0.5, ge=0, le=10)
    #: Longest ``?wait=`` (HTTP) or ``wait`` (gRPC GetBooking) a client may ask for (seconds).
    max_wait_seconds: float = Field(default=60.0, gt=0, le=3600)
    #: Most facts applied in one read-model transaction (replay speed).
    #: Views of the bookings that changed last kept in memory, so the reads that follow a
    #: change (a client waiting for its booking, the next fact of its workflow) skip the
    #: database; 0 reads every booking from the database.
    recent_views: int = Field(default=10_000, ge=0, le=1_000_000)
    projection_batch_size: int = Field(default=1000, ge=1, le=10_000)
    #: Idle heartbeat of the projection's pull consumers; three missed ones restart a feed
    #: from its checkpoint (how fast it notices a NATS restart).
    projection_heartbeat_seconds: float = Field(default=1.0, ge=0.1, le=30)

    # -- authentication (gateway.api.auth) and per-caller limits (gateway.application.limits) -------

    #: ``none``: every caller is anonymous and may do everything (local use, ``choreo up``);
    #: ``jwt``: every API call needs a bearer token, its ``sub`` is the user (README,
    #: "Authentication and authorization").
    auth: Literal["none", "jwt"] = "none"
    #: HS256 key of the tokens (at least 32 bytes); or give ``jwt_hs256_secret_file`` or ``jwt_jwks_url``.
    jwt_hs256_secret: SecretStr | None = None
    #: File holding the HS256 key (surrounding whitespace stripped), e.g. a mounted Secret.
    jwt_hs256_secret_file: Path | None = None
    #: The identity provider's JWKS (RS256 and ES256 keys), fetched, cached and refreshed.
    jwt_jwks_url: str | None = None
    #: Required ``iss`` of the tokens (unset: not checked).
    jwt_issuer: str | None = None
    #: Required ``aud`` of the tokens (unset: a token naming an audience is refused).
    jwt_audience: str | None = None
    #: Clock skew tolerated on ``exp``, ``nbf`` and ``iat`` (seconds).
    jwt_leeway_seconds: float = Field(default=10.0, ge=0, le=300)
    #: The JWKS is fetched again after this long, so rotated keys are picked up (seconds).
    jwt_jwks_max_age_seconds: float = Field(default=600.0, ge=1, le=86_400)
    #: A token with an unknown ``kid`` refetches the JWKS at most this often, so a flood of
    #: made-up kids cannot hammer the identity provider (seconds).
    jwt_jwks_refresh_interval_seconds: float = Field(default=10.0, ge=0.1, le=3600)
    #: Creates per second one caller (token ``sub``) may make, on average; 0: unlimited.
    #: Only with ``GATEWAY_AUTH=jwt`` (without auth nobody is told apart).
    create_rate_per_second: float = Field(default=10.0, ge=0, le=100_000)
    #: Creates one caller may make at once above that rate (the bucket's size).
    create_burst: int = Field(default=50, ge=1, le=1_000_000)
    #: Watches and waits (WatchBooking, GetBooking with ``wait``, ``?wait=``) one caller may
    #: hold open at once; only with ``GATEWAY_AUTH=jwt``.
    max_watches_per_caller: int = Field(default=100, ge=1, le=1_000_000)
    #: Watches and waits open at once, all callers together (with or without auth). Each holds
    #: a call's memory for as long as its client likes. ``choreo bench`` holds at most about
    #: 1,500 (1,000 creates/s open loop, each followed by a wait of up to ~1.5 s); 4,000 leaves
    #: more than twice that for latency spikes, and still refuses a flood of 5,000.
    max_watches: int = Field(default=4_000, ge=1, le=1_000_000)

    @field_validator("jwt_jwks_url")
    @classmethod
    def _check_jwks_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError("must be an http(s) URL")
        # Keys fetched in clear text could be swapped on the way, and then anyone could mint
        # tokens: plain http only to this host (a sidecar, a test).
        if parts.scheme == "http" and parts.hostname not in ("localhost", "127.0.0.1", "::1"):
            raise ValueError("must be https (plain http only to localhost)")
        return value

    @model_validator(mode="after")
    def _check_auth(self) -> Self:
        if self.auth != "jwt":
            return self
        secrets = [
            name
            for name, value in (
                ("GATEWAY_JWT_HS256_SECRET", self.jwt_hs256_secret),
                ("GATEWAY_JWT_HS256_SECRET_FILE", self.jwt_hs256_secret_file),
                ("GATEWAY_JWT_JWKS_URL", self.jwt_jwks_url),
            )
            if value is not None
        ]
        if len(secrets) != 1:
            given = f"{' and '.join(secrets)} are set" if secrets else "none is set"
            raise ValueError(
                "GATEWAY_AUTH=jwt needs exactly one of GATEWAY_JWT_HS256_SECRET, "
                f"GATEWAY_JWT_HS256_SECRET_FILE or GATEWAY_JWT_JWKS_URL; {given}"
            )
        if self.jwt_jwks_url is None:
            self.hs256_secret()
        return self

    def hs256_secret(self) -> bytes:
        """The HS256 key (from ``jwt_hs256_secret`` or its file).

        Raises:
            ValueError: Neither is set, the file cannot be read, or the key is shorter
                than ``MIN_HS256_SECRET_BYTES``; the message names the variable.
        """
        if self.jwt_hs256_secret is not None:
            name, secret = "GATEWAY_JWT_HS256_SECRET", self.jwt_hs256_secret.get_secret_value().encode()
        elif self.jwt_hs256_secret_file is not None:
            name = "GATEWAY_JWT_HS256_SECRET_FILE"
            try:
                secret = self.jwt_hs256_secret_file.read_bytes().strip()
            except OSError as exc:
                raise ValueError(
                    f"{name}: cannot read {self.jwt_hs256_secret_file}: {exc.strerror}"
                ) from None
        else:
            raise ValueError("no HS256 secret is configured")
        if len(secret) < MIN_HS256_SECRET_BYTES:
            raise ValueError(f"{name}: the secret must be at least {MIN_HS256_SECRET_BYTES} bytes")
        return secret

    @field_validator("streams")
    @classmethod
    def _check_streams(cls, value: str) -> str:
        names = [s.strip() for s in value.split(",") if s.strip()]
        if not names:
            raise ValueError("at least one stream is required")
        for name in names:
            if not _STREAM_NAME.fullmatch(name):
                raise ValueError(f"not a stream name: {name!r}")
        if len(set(names)) != len(names):
            raise ValueError("a stream is listed twice")
        return ",".join(names)

    @property
    def stream_names(self) -> list[str]:
        return self.streams.split(",")

    # --- Server limits, error hygiene and TLS (gateway/api/server_limits.py, gateway/api/tls.py) ---
    #: Largest HTTP request body, in bytes; a larger one is answered 413 while it streams in.
    http_max_body_bytes: int = Field(default=16 * 1024, ge=1024, le=16 * 1024 * 1024)
    #: Largest HTTP request line plus headers, in bytes (h11's ``max_incomplete_event_size``).
    http_max_header_bytes: int = Field(default=16 * 1024, ge=1024, le=1024 * 1024)
    #: Seconds a client has to send a whole request (line, headers, body) once it opened the
    #: connection or sent the request's first byte; a slower one is disconnected (slowloris).
    http_request_read_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    #: Seconds an idle keep-alive HTTP connection is kept open between requests.
    http_keep_alive_seconds: float = Field(default=5.0, gt=0, le=300)
    #: Open HTTP connections; a request on one over the cap is answered 503 and the connection closed.
    http_max_connections: int = Field(default=1024, ge=1, le=100_000)
    #: Connections the HTTP socket queues before they are accepted (``listen`` backlog).
    http_backlog: int = Field(default=2048, ge=1, le=65_535)
    #: gRPC calls in progress (watches included); more are refused with RESOURCE_EXHAUSTED.
    #: Above the thousands of calls in flight of ``choreo bench``'s overloaded open loop.
    grpc_max_concurrent_rpcs: int = Field(default=10_000, ge=1, le=1_000_000)
    #: Concurrent gRPC calls (HTTP/2 streams) on one connection; more wait at the client.
    grpc_max_concurrent_streams: int = Field(default=4096, ge=1, le=1_000_000)
    #: Largest gRPC request message, in bytes; larger is RESOURCE_EXHAUSTED.
    grpc_max_receive_message_bytes: int = Field(default=16 * 1024, ge=1024, le=64 * 1024 * 1024)
    #: Shortest interval between a client's keepalive pings the server tolerates; a client
    #: pinging more often gets strikes, then GOAWAY (``grpc.http2.min_ping_interval_without_data_ms``).
    grpc_min_ping_interval_seconds: float = Field(default=10.0, ge=1, le=3600)
    #: Tolerate keepalive pings on connections without calls (off: they count as strikes).
    grpc_keepalive_permit_without_calls: bool = False
    #: Pings too frequent tolerated before the connection is closed (0: none tolerated).
    grpc_max_ping_strikes: int = Field(default=2, ge=0, le=100)
    #: The server pings a connection idle this long to find dead clients (their calls end).
    grpc_keepalive_seconds: float = Field(default=60.0, ge=1, le=7200)
    #: Seconds the server waits for its ping's answer before closing the connection.
    grpc_keepalive_timeout_seconds: float = Field(default=20.0, ge=1, le=600)
    #: A connection without calls for this long is closed (GOAWAY); 0: never.
    grpc_max_connection_idle_seconds: float = Field(default=300.0, ge=0, le=86_400)
    #: A connection older than this is asked to reconnect (GOAWAY, with grace); 0: never.
    #: Also spreads long-lived clients over new replicas.
    grpc_max_connection_age_seconds: float = Field(default=1800.0, ge=0, le=86_400 * 7)
    #: Seconds the calls of a connection past its age may still run (a watch then ends).
    grpc_max_connection_age_grace_seconds: float = Field(default=300.0, ge=0, le=86_400)
    #: Serve gRPC server reflection (grpcurl, Postman); off in the prod overlay.
    grpc_reflection: bool = True
    #: Serve /docs (Swagger UI) and /redoc; /openapi.json is served always.
    http_docs: bool = True
    #: Key that signs page tokens; every replica needs the same one. Unset: a random key per
    #: process (one replica: a token then lasts as long as the process).
    page_token_secret: SecretStr | None = None
    #: PEM certificate chain of the gRPC and HTTP servers; with ``tls_key_file``, both serve TLS only.
    tls_cert_file: Path | None = None
    #: PEM private key of ``tls_cert_file``.
    tls_key_file: Path | None = None
    #: PEM CA bundle: set, both servers require client certificates signed by it (mTLS).
    tls_client_ca_file: Path | None = None

    @model_validator(mode="after")
    def _check_tls(self) -> GatewaySettings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError(
                "GATEWAY_TLS_CERT_FILE and GATEWAY_TLS_KEY_FILE go together: set both or neither"
            )
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError(
                "GATEWAY_TLS_CLIENT_CA_FILE (mTLS) needs GATEWAY_TLS_CERT_FILE and GATEWAY_TLS_KEY_FILE"
            )
        for name in ("tls_cert_file", "tls_key_file", "tls_client_ca_file"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"GATEWAY_{name.upper()}={str(path)!r} is not a readable file")
        if self.page_token_secret is not None and not self.page_token_secret.get_secret_value():
            raise ValueError("GATEWAY_PAGE_TOKEN_SECRET is empty; unset it or give it a value")
        return self
