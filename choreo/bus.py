"""The NATS connection and idempotent JetStream provisioning.

Each service provisions what it owns at start-up: its own stream, the DLQ
stream, and its durable consumers. Provisioning is "create or update", so it is
safe to run on every start and on every replica.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from nats.aio.client import Client as NATS
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError, NotFoundError, ServerError, ServiceUnavailableError

from choreo import natsclient
from choreo.settings import ServiceSettings
from choreo.subjects import STREAM_SUBJECTS
from choreo.tlsconfig import nats_tls_options

log = logging.getLogger(__name__)

#: JetStream drops a re-published Nats-Msg-Id seen within this window.
DUPLICATE_WINDOW_SECONDS = 120.0


async def connect(settings: ServiceSettings, *, name: str | None = None, **options: Any) -> NATS:
    """Connects to any of the configured NATS servers and reconnects forever.

    Args:
        settings: Gives the URLs and the credentials.
        name: Connection name shown by the server's monitoring.
        options: Passed to ``nats.connect`` (through ``choreo.natsclient``) (override the defaults below).
    """

    async def on_disconnect() -> None:
        log.warning("disconnected from NATS")

    async def on_reconnect() -> None:
        log.warning("reconnected to NATS at %s", nc.connected_url.netloc if nc.connected_url else "?")

    async def on_error(exc: Exception) -> None:
        log.warning("NATS error: %r", exc)

    kwargs: dict[str, Any] = {
        "servers": settings.nats_servers,
        "name": name or settings.service_name,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": 0.5,
        "connect_timeout": 2,
        "allow_reconnect": True,
        "disconnected_cb": on_disconnect,
        "reconnected_cb": on_reconnect,
        "error_cb": on_error,
        # Keep publishing into the client buffer through a short outage.
        "pending_size": 64 * 1024 * 1024,
    }
    if settings.nats_user:
        kwargs["user"] = settings.nats_user
        kwargs["password"] = settings.nats_password.get_secret_value() if settings.nats_password else ""
    if settings.nats_creds:
        kwargs["user_credentials"] = settings.nats_creds
    kwargs.update(nats_tls_options(settings))
    kwargs.update(options)
    nc = await natsclient.connect(**kwargs)
    return nc


async def flush_subscriptions(nc: NATS) -> None:
    """Returns once the server has registered every subscription made so far.

    nats-py's ``flush()`` writes its PING straight to the socket, ahead of
    commands still in its pending buffer, so a single flush can come back
    before the server has seen a SUB made just before it (a request sent then
    finds "no responders"). The first round trip gives the client's flusher
    task time to write the buffer; the second PING then travels behind the SUB.
    """
    await nc.flush()
    await nc.flush()


def stream_config(name: str, replicas: int = 1) -> StreamConfig:
    """The configuration of one of choreo's streams (file storage, de-duplication)."""
    return StreamConfig(
        name=name,
        subjects=STREAM_SUBJECTS[name],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.OLD,
        num_replicas=replicas,
        duplicate_window=DUPLICATE_WINDOW_SECONDS,
        # Lets readers fetch a message by subject without a consumer.
        allow_direct=True,
    )


async def provision_stream(js: JetStreamContext, name: str, replicas: int = 1) -> None:
    """``ensure_stream``, retried until JetStream answers.

    A cluster that is still forming (no meta leader yet) or a node that is
    restarting makes JetStream API calls time out for a while; a service that
    starts meanwhile waits instead of crash-looping. A SIGTERM still stops it,
    since ``run_main`` cancels a start-up in progress.
    """
    delay = 0.2
    while True:
        try:
            await ensure_stream(js, name, replicas)
            return
        except (NatsTimeoutError, NoRespondersError, ServiceUnavailableError, ServerError) as exc:
            log.warning("JetStream not ready to provision %s (%r); retrying in %.1fs", name, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


async def ensure_stream(js: JetStreamContext, name: str, replicas: int = 1) -> None:
    """Creates the stream, or updates it to the wanted configuration."""
    config = stream_config(name, replicas)
    try:
        info = await js.stream_info(name)
    except NotFoundError:
        try:
            await js.add_stream(config)
            log.info("created stream %s", name, extra={"stream": name})
            return
        except BadRequestError:
            # Another replica created it between our lookup and our create.
            info = await js.stream_info(name)
    current = info.config
    if current.subjects != config.subjects or current.num_replicas != config.num_replicas:
        await js.update_stream(config)
        log.info("updated stream %s", name, extra={"stream": name})
