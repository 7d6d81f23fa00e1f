"""Wiring shared by the worker services: connection, streams, database, relay.

A service's ``build(settings)`` calls ``open_runtime`` with its settings and its
``choreo.topology.Topology`` for the parts every service has (the stream it owns,
the DLQ, the database, the outbox relay), then adds its consumers (``Runtime.consumer``
of each declared ``Subscription``) and its command servers.
"""

from __future__ import annotations

from dataclasses import dataclass

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from sqlalchemy.ext.asyncio import AsyncEngine

from choreo.bus import StreamLimits, connect, ensure_stream, provision_stream
from choreo.consumer import EventConsumer
from choreo.db import make_engine
from choreo.dlq import DLQ
from choreo.health import HealthServer
from choreo.inbox import InboxPruner
from choreo.metrics import Stages
from choreo.outbox import OutboxRelay
from choreo.recovery import Recovery, recover_if_lost
from choreo.retry import RetryPolicy
from choreo.schema import Migrations, prepare_schema
from choreo.service import Component, Service, database_check, nats_check
from choreo.settings import ConsumerSettings
from choreo.topology import Subscription, Topology, TopologyError


@dataclass
class Runtime:
    """The connection, database, outbox relay and stage timings of one service process."""

    settings: ConsumerSettings
    topology: Topology
    nc: NATS
    js: JetStreamContext
    engine: AsyncEngine
    relay: OutboxRelay
    stages: Stages
    #: Answering probes since start-up began (liveness fine, not ready), if the service has a health port.
    health: HealthServer | None = None
    #: This service keeps the DLQ stream's configuration up to date (``open_runtime``).
    owns_dlq: bool = False

    def consumer(self, subscription: Subscription) -> EventConsumer:
        """The durable consumer of one of the topology's subscriptions, configured from the settings.

        Raises:
            TopologyError: The subscription is not declared in the topology (which must stay
                the whole truth about what the service consumes).
        """
        if subscription not in self.topology.subscriptions:
            raise TopologyError(
                f"consumer {subscription.durable} is not among {self.topology.service}'s subscriptions"
            )
        s = self.settings
        return EventConsumer(
            js=self.js,
            nc=self.nc,
            engine=self.engine,
            stream=subscription.stream,
            durable=subscription.durable,
            subjects=subscription.subjects,
            routes=subscription.routes,
            source=s.service_name,
            retry=RetryPolicy(s.max_deliveries, s.retry_backoff_seconds, s.retry_backoff_max_seconds),
            batch_size=s.batch_size,
            ack_wait_seconds=s.ack_wait_seconds,
            on_commit=self.relay.notify,
            stages=self.stages,
            ensure_dlq=self.ensure_dlq,
            run_timeout_seconds=s.run_timeout_seconds,
        )

    async def ensure_dlq(self) -> None:
        """Provisions the DLQ stream again (it was deleted, or JetStream lost it)."""
        await ensure_stream(self.js, DLQ, self.settings.stream_replicas, update=self.owns_dlq)

    def service(self, components: list[Component]) -> Service:
        """The runnable service, with health checks on NATS and the database."""
        s = self.settings
        health = self.health
        if health is not None:
            health.configure(
                {"nats": nats_check(self.nc), "database": database_check(self.engine)},
                metrics=self.stages.render,
                ready_checks={"outbox": self.relay.check},
            )
        return Service(
            name=s.service_name,
            settings=s,
            nc=self.nc,
            engine=self.engine,
            components=[*components, InboxPruner(self.engine, s.inbox_retention_seconds)],
            relay=self.relay,
            health=health,
        )


async def open_runtime(
    settings: ConsumerSettings,
    topology: Topology,
    *,
    migrations: Migrations | None,
    recovery: Recovery | None = None,
    owns_dlq: bool = False,
) -> Runtime:
    """Brings the database's schema to this release, then connects and provisions the streams.

    The schema comes first: a service that may not run on its database (``check``
    found it behind) stops before it touches NATS.

    Args:
        settings: The service's settings (``migrate`` says whether to upgrade or check).
        topology: What the service owns, publishes and consumes; its stream is provisioned here.
        migrations: The service's own tables and revisions; None when it has only the runtime's.
        recovery: How to rebuild the service's tables from its stream (``choreo.recovery``):
            done here, before any part runs, when the database is empty and the stream is not.
        owns_dlq: This service updates the DLQ stream's configuration; one service of the
            system does (its NATS user alone may, auth.conf), the others only create it when
            it is missing.
    """
    if recovery is not None and (topology.stream is None or recovery.stream != topology.stream.name):
        raise TopologyError(
            f"{settings.service_name} rebuilds from {recovery.stream}, a stream it does not own"
        )
    own_stream = topology.stream
    starting = _StartingUp()
    health = None
    if settings.health_port:
        # Up from the start: a schema upgrade or a rebuild by replay may take minutes, and a
        # process that answers no probe meanwhile would be killed (and start over).
        health = HealthServer(
            settings.health_host, settings.health_port, {}, ready_checks={"starting": starting.check}
        )
        await health.start()
    engine = make_engine(settings.database_url, synchronous=settings.sqlite_synchronous)
    try:
        starting.step = "upgrading the database schema"
        await prepare_schema(
            engine,
            migrations,
            mode=settings.migrate,
            service=settings.service_name,
            setting=f"{settings.model_config.get('env_prefix', '')}MIGRATE",
        )
        starting.step = "connecting to NATS"
        nc = await connect(settings)
    except BaseException:
        await engine.dispose()
        if health is not None:
            await health.stop()
        raise
    js = nc.jetstream()
    try:
        starting.step = "provisioning streams"
        if own_stream is not None:
            await provision_stream(js, own_stream, settings.stream_replicas, StreamLimits.of(settings))
        await provision_stream(js, DLQ, settings.stream_replicas, update=owns_dlq)
        if recovery is not None:
            starting.step = f"checking whether to rebuild from {recovery.stream}"
            await recover_if_lost(
                nc, js, engine, recovery, service=settings.service_name, progress=starting.rebuilding
            )
    except BaseException:
        await nc.close()
        await engine.dispose()
        if health is not None:
            await health.stop()
        raise
    stages = Stages(settings.service_name)
    provision = None
    if own_stream is not None:
        stream = own_stream

        async def provision() -> None:
            await ensure_stream(js, stream, settings.stream_replicas, StreamLimits.of(settings))

    # A context of its own: the relay must be the only publish_async user of it (choreo.jspublish).
    relay = OutboxRelay(
        engine, nc.jetstream(), stages=stages, provision=provision, stream_of=topology.stream_of
    )
    starting.step = "starting its parts"
    return Runtime(settings, topology, nc, js, engine, relay, stages, health, owns_dlq)


class _StartingUp:
    """What a service is doing before it serves, for ``/readyz``."""

    def __init__(self) -> None:
        self.step = "starting"

    def rebuilding(self, position: int, target: int) -> None:
        self.step = f"rebuilding its database by replay: {position}/{target}"

    async def check(self) -> str | None:
        return self.step
