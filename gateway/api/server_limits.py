"""The connection-level limits of the gateway's servers, from its settings.

gRPC: calls in progress (``maximum_concurrent_rpcs``, refused with
RESOURCE_EXHAUSTED), streams per connection, request message size
(RESOURCE_EXHAUSTED), keepalive enforcement (a client pinging too often gets
GOAWAY), dead-client detection, and connection idle time and age. HTTP
(uvicorn): header size, keep-alive, the request read deadline and the
connection cap (``gateway.api.http_protocol``), and the listen backlog; the body
limit is ASGI middleware (``gateway.api.http_limits``). Defaults are above what
``choreo bench`` and the demo use, so they change none of their figures.
"""

from __future__ import annotations

from typing import Any

from gateway.api.http_protocol import limited_protocol
from gateway.settings import GatewaySettings


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


def grpc_options(settings: GatewaySettings) -> list[tuple[str, int]]:
    """Channel arguments of the gRPC server (see the module doc)."""
    s = settings
    options = [
        ("grpc.max_concurrent_streams", s.grpc_max_concurrent_streams),
        ("grpc.max_receive_message_length", s.grpc_max_receive_message_bytes),
        ("grpc.http2.min_ping_interval_without_data_ms", _ms(s.grpc_min_ping_interval_seconds)),
        ("grpc.keepalive_permit_without_calls", int(s.grpc_keepalive_permit_without_calls)),
        ("grpc.http2.max_ping_strikes", s.grpc_max_ping_strikes),
        ("grpc.keepalive_time_ms", _ms(s.grpc_keepalive_seconds)),
        ("grpc.keepalive_timeout_ms", _ms(s.grpc_keepalive_timeout_seconds)),
    ]
    # grpc's own default for each of these is "never"; 0 keeps it.
    if s.grpc_max_connection_idle_seconds:
        options.append(("grpc.max_connection_idle_ms", _ms(s.grpc_max_connection_idle_seconds)))
    if s.grpc_max_connection_age_seconds:
        options.append(("grpc.max_connection_age_ms", _ms(s.grpc_max_connection_age_seconds)))
        options.append(("grpc.max_connection_age_grace_ms", _ms(s.grpc_max_connection_age_grace_seconds)))
    return options


def uvicorn_options(settings: GatewaySettings) -> dict[str, Any]:
    """``uvicorn.Config`` keyword arguments (see the module doc)."""
    return {
        "http": limited_protocol(
            read_timeout=settings.http_request_read_timeout_seconds,
            max_connections=settings.http_max_connections,
        ),
        "h11_max_incomplete_event_size": settings.http_max_header_bytes,
        "timeout_keep_alive": settings.http_keep_alive_seconds,
        "backlog": settings.http_backlog,
    }
