"""Configuration of the gateway (environment variables ``GATEWAY_*``)."""

from __future__ import annotations

import re

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from choreo.settings import ServiceSettings

_STREAM_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


class GatewaySettings(ServiceSettings):
    """Gateway settings; see ``choreo.settings.ServiceSettings`` for the common ones."""

    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="ignore", frozen=True)

    service_name: str = "gateway"
    database_url: str = "sqlite+aiosqlite:///./var/gateway.db"
    #: Address the gRPC and HTTP servers bind.
    host: str = "0.0.0.0"
    grpc_port: int = Field(default=50051, ge=0, le=65535)
    http_port: int = Field(default=8080, ge=0, le=65535)
    #: How long CreateBooking waits for the booking service before answering UNAVAILABLE.
    command_timeout_seconds: float = Field(default=5.0, gt=0, le=120)
    #: Streams projected into the read model and indexed for traces, comma-separated.
    #: The trace reads only CloudEvents headers, so a new service's stream is added here.
    streams: str = "BOOKING,PAYMENT"
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
