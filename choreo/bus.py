"""The NATS connection and idempotent JetStream provisioning.

Each service provisions what it owns at start-up: its own stream, the DLQ
stream, and its durable consumers. Provisioning is "create or update", so it is
safe to run on every start and on every replica. Every stream has limits
(``StreamLimits``: bytes, message size, age) and refuses publishes when full.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

from nats.aio.client import Client as NATS
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError, NotFoundError, ServerError, ServiceUnavailableError

from choreo import natsclient
from choreo.dlq import DLQ
from choreo.natsidentity import connection_owner, inbox_prefix
from choreo.retry import Backoff
from choreo.settings import (
    DEFAULT_STREAM_MAX_BYTES,
    DEFAULT_STREAM_MAX_MSG_SIZE,
    MIB,
    ConsumerSettings,
    ServiceSettings,
)
from choreo.tlsconfig import nats_tls_options
from choreo.topology import Stream

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
        # Replies come back under `_INBOX_<user>`, which only this user may read (choreo.natsidentity).
        "inbox_prefix": inbox_prefix(
            connection_owner(settings.nats_servers, settings.nats_user, settings.service_name)
        ),
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


@dataclass(frozen=True, slots=True)
class StreamLimits:
    """How much a stream may hold (``choreo.settings``: ``<PREFIX>_STREAM_MAX_*``).

    Attributes:
        max_bytes: Most bytes stored; when reached, publishes are refused (``discard=new``).
        max_msg_size: Largest message accepted.
        max_age_seconds: Age after which a message is deleted; 0 keeps it forever.
    """

    max_bytes: int = DEFAULT_STREAM_MAX_BYTES
    max_msg_size: int = DEFAULT_STREAM_MAX_MSG_SIZE
    max_age_seconds: float = 0.0

    @classmethod
    def of(cls, settings: ConsumerSettings) -> StreamLimits:
        return cls(settings.stream_max_bytes, settings.stream_max_msg_size, settings.stream_max_age_seconds)


#: The DLQ's limits. Every service provisions the DLQ, so its limits are constants of the release,
#: not settings: services configured differently would otherwise rewrite it at each start. Its
#: messages are copies of facts plus a few headers, hence the larger ``max_msg_size`` (a copy of
#: any fact a stream accepted fits; the server's ``max_payload`` bounds both anyway).
DLQ_LIMITS = StreamLimits(max_bytes=256 * MIB, max_msg_size=8 * MIB, max_age_seconds=0.0)


def stream_config(stream: Stream, replicas: int = 1, limits: StreamLimits | None = None) -> StreamConfig:
    """The configuration of a stream (file storage, de-duplication, limits).

    A full stream refuses new messages (``discard=new``) rather than dropping its oldest:
    the history is what a rebuild by replay reads, and the outboxes keep what was refused.
    The DLQ always gets ``DLQ_LIMITS``, whatever ``limits`` says.
    """
    chosen = DLQ_LIMITS if stream.name == DLQ.name else (limits or StreamLimits())
    return StreamConfig(
        name=stream.name,
        subjects=list(stream.subjects),
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.NEW,
        max_bytes=chosen.max_bytes,
        max_msg_size=chosen.max_msg_size,
        max_age=chosen.max_age_seconds,
        num_replicas=replicas,
        duplicate_window=DUPLICATE_WINDOW_SECONDS,
        # Lets readers fetch a message by subject without a consumer.
        allow_direct=True,
    )


async def provision_stream(
    js: JetStreamContext,
    stream: Stream,
    replicas: int = 1,
    limits: StreamLimits | None = None,
    *,
    update: bool | None = None,
) -> None:
    """``ensure_stream``, retried until JetStream answers.

    A cluster that is still forming (no meta leader yet) or a node that is
    restarting makes JetStream API calls time out for a while; a service that
    starts meanwhile waits instead of crash-looping. A SIGTERM still stops it,
    since ``run_main`` cancels a start-up in progress.
    """
    retries = Backoff(0.2, 5.0).start()  # 0.2, 0.4, 0.8, ... up to 5 s
    while True:
        try:
            await ensure_stream(js, stream, replicas, limits, update=update)
            return
        except (NatsTimeoutError, NoRespondersError, ServiceUnavailableError, ServerError) as exc:
            delay = retries.next()
            log.warning(
                "JetStream not ready to provision %s (%r); retrying in %.1fs", stream.name, exc, delay
            )
            await asyncio.sleep(delay)


async def ensure_stream(
    js: JetStreamContext,
    stream: Stream,
    replicas: int = 1,
    limits: StreamLimits | None = None,
    *,
    update: bool | None = None,
) -> None:
    """Creates the stream, or updates it to the wanted configuration (subjects, replicas, limits).

    ``update=False`` only creates a missing stream, and logs a difference instead of
    updating; ``None`` (the default) updates every stream but the DLQ, which only its
    owner updates (``open_runtime(owns_dlq=True)`` passes ``update=True``): the other
    services create it when it is missing and leave it as it is. Their NATS users may not
    update it (auth.conf): an update can shrink it, change its subjects or seal it, and
    every consumer's dead letters would be refused.

    A ``max_bytes`` below what the stream already holds is not applied: JetStream would
    delete the oldest facts to fit, and a rebuild by replay needs them. The stream keeps
    its larger limit and an error says so.
    """
    name = stream.name
    config = stream_config(stream, replicas, limits)
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
    held = info.state.bytes
    if config.max_bytes is not None and 0 < config.max_bytes < held:
        log.error(
            "stream %s holds %d bytes, more than the wanted max_bytes %d: keeping its limit of %s "
            "(a lower one would delete its oldest facts); raise the setting, or remove facts by hand",
            name,
            held,
            config.max_bytes,
            current.max_bytes,
            extra={"stream": name},
        )
        config = dataclasses.replace(config, max_bytes=current.max_bytes)
    if not _differs(current, config):
        return
    if not (name != DLQ.name if update is None else update):
        log.warning(
            "stream %s differs from this release's configuration; left to its owner to update",
            name,
            extra={"stream": name},
        )
        return
    await js.update_stream(config)
    log.info("updated stream %s", name, extra={"stream": name})


def _differs(current: StreamConfig, wanted: StreamConfig) -> bool:
    return (
        current.subjects != wanted.subjects
        or current.num_replicas != wanted.num_replicas
        or current.discard != wanted.discard
        or current.max_bytes != wanted.max_bytes
        or current.max_msg_size != wanted.max_msg_size
        or (current.max_age or 0.0) != (wanted.max_age or 0.0)
    )
