"""Assembling the gateway from its parts (``build(settings)`` for ``choreo.service.run_main``).

Components, in stop order: the gRPC server and the HTTP server (stop taking
requests, end watches, let in-flight calls finish), then the stream feeds
(finish the batch in hand). ``Service.stop`` then drains NATS and disposes
of the database engines.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from choreo.bus import connect, provision_stream
from choreo.db import is_sqlite, make_engine, normalize_url
from choreo.dlq import DLQ
from choreo.metrics import Stages
from choreo.service import Component, Service
from gateway.api.auth import build_authenticator
from gateway.api.grpc_api import GrpcServer
from gateway.api.grpc_errors import ErrorInterceptor
from gateway.api.http_api import create_app
from gateway.api.http_server import HttpServer
from gateway.api.server_limits import grpc_options, uvicorn_options
from gateway.api.tls import ServerTls
from gateway.application.command_client import BookingCommands
from gateway.application.core import GatewayCore
from gateway.application.limits import CallerLimits
from gateway.application.nats_request import NatsRequester
from gateway.application.paging import PageTokens
from gateway.application.readiness import Readiness
from gateway.application.stats import StatsQueries
from gateway.application.watchers import Watchers
from gateway.projection.feed import StreamFeed
from gateway.readmodel.store import ReadModel
from gateway.settings import GatewaySettings

log = logging.getLogger(__name__)


@dataclass
class GatewayService(Service):
    """The running gateway; its parts are exposed for operations and tests."""

    core: GatewayCore | None = None
    store: ReadModel | None = None
    readiness: Readiness | None = None
    feeds: list[StreamFeed] = field(default_factory=list)
    grpc_port: int = 0
    http_port: int = 0


async def build(settings: GatewaySettings) -> GatewayService:
    """Connects, opens the read model, and wires the servers and the feeds."""
    nc = await connect(settings)
    engines: list[AsyncEngine] = []
    servers: list[GrpcServer | HttpServer] = []
    # Fetches the identity provider's keys (GATEWAY_JWT_JWKS_URL), if any.
    jwks_http = httpx.AsyncClient(timeout=5.0, follow_redirects=False) if settings.jwt_jwks_url else None
    try:
        js = nc.jetstream()
        # Poison facts are copied there; every service provisions it the same way.
        await provision_stream(js, DLQ, settings.stream_replicas)
        writer = make_engine(settings.database_url, synchronous=settings.sqlite_synchronous)
        engines.append(writer)
        reader = writer
        if is_sqlite(normalize_url(settings.database_url)):
            # WAL readers never wait for the writer; they need their own (non-IMMEDIATE) engine.
            reader = make_engine(settings.database_url, writer=False)
            engines.append(reader)
        watchers = Watchers()
        stages = Stages(settings.service_name)
        store = ReadModel(
            writer, reader, on_commit=watchers.notify, recent_views=settings.recent_views, stages=stages
        )
        await store.create_tables()
        feeds = [
            StreamFeed(
                nc=nc,
                js=js,
                stream=name,
                store=store,
                batch_size=settings.projection_batch_size,
                heartbeat=settings.projection_heartbeat_seconds,
                dlq_replicas=settings.stream_replicas,
            )
            for name in settings.stream_names
        ]
        # One way to ask another service: booking's commands and analytics' queries.
        requester = NatsRequester(nc, settings.service_name, stages)
        stats = StatsQueries(requester, settings.stats_timeout_seconds)
        core = GatewayCore(
            store=store,
            commands=BookingCommands(requester, settings.command_timeout_seconds),
            watchers=watchers,
            max_wait_seconds=settings.max_wait_seconds,
            not_found_grace_seconds=settings.not_found_grace_seconds,
            limits=CallerLimits(
                create_rate=settings.create_rate_per_second,
                create_burst=settings.create_burst,
                max_watches_per_caller=settings.max_watches_per_caller,
                max_watches=settings.max_watches,
            ),
            page_tokens=_page_tokens(settings),
        )
        authenticator = build_authenticator(settings, jwks_http)
        readiness = Readiness(nc, store, feeds)
        grace = settings.shutdown_grace_seconds
        tls = ServerTls.from_settings(settings)
        grpc_server = GrpcServer(
            core,
            readiness,
            stats=stats,
            host=settings.host,
            port=settings.grpc_port,
            grace=grace,
            # Outermost, so the catch-all covers the authentication step too.
            interceptors=[ErrorInterceptor()],
            authenticator=authenticator,
            options=grpc_options(settings),
            maximum_concurrent_rpcs=settings.grpc_max_concurrent_rpcs,
            credentials=tls.grpc_credentials() if tls else None,
            reflection=settings.grpc_reflection,
        )
        servers.append(grpc_server)
        http_server = HttpServer(
            create_app(
                core,
                readiness,
                stages,
                stats=stats,
                authenticator=authenticator,
                docs=settings.http_docs,
                max_body_bytes=settings.http_max_body_bytes,
            ),
            core,
            host=settings.host,
            port=settings.http_port,
            grace=grace,
            options={**uvicorn_options(settings), **(tls.uvicorn_options() if tls else {})},
        )
        servers.append(http_server)
    except BaseException:
        for server in servers:
            if isinstance(server, HttpServer):
                server.close()
        for engine in engines:
            await engine.dispose()
        if jwks_http is not None:
            await jwks_http.aclose()
        with contextlib.suppress(Exception):
            await nc.close()
        raise
    components: list[Component] = [grpc_server, http_server, *feeds]
    service = GatewayService(
        name=settings.service_name,
        settings=settings,
        nc=nc,
        engine=writer,
        components=components,
        core=core,
        store=store,
        readiness=readiness,
        feeds=feeds,
        grpc_port=grpc_server.port,
        http_port=http_server.port,
    )
    if reader is not writer:
        service.on_stop.append(reader.dispose)
    if jwks_http is not None:
        service.on_stop.append(jwks_http.aclose)
    if settings.auth == "none":
        log.info("gateway: authentication off (GATEWAY_AUTH=none): every caller may do everything")
    else:
        keys = f"the JWKS at {settings.jwt_jwks_url}" if settings.jwt_jwks_url else "an HS256 secret"
        log.info("gateway: callers authenticated by bearer tokens verified with %s", keys)
    log.info(
        "gateway: gRPC on %s:%d, HTTP on %s:%d (%s), projecting %s",
        settings.host,
        grpc_server.port,
        settings.host,
        http_server.port,
        "plaintext" if tls is None else "mTLS" if tls.mutual else "TLS",
        settings.streams,
    )
    return service


def _page_tokens(settings: GatewaySettings) -> PageTokens:
    secret = settings.page_token_secret
    if secret is None:
        log.info("GATEWAY_PAGE_TOKEN_SECRET is unset: page tokens are signed with a key of this process")
        return PageTokens()
    return PageTokens(secret.get_secret_value().encode())
