"""An in-memory choreography of the services' real handlers, for the property test.

Each durable consumer of each service's ``Topology`` is a ``HandlerHarness`` on that
service's real schema (SQLite): the same prepare step, transaction, inbox and outbox
as its consumer runs. What a transaction commits to a service's outbox is published
by draining the outbox as the relay does, and offered to every consumer whose
subscription routes its type. The test decides which delivery runs next and which is
delivered again: the orders and duplicates JetStream allows (a redelivery after a
crash or a lost ack, several replicas, batches, streams read independently). A route's
``prepare`` step (a call to the payment provider) and its transaction are two steps, so
other deliveries run between them, as they do in concurrent consumers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine

from choreo.contract import type_name
from choreo.envelope import Envelope
from choreo.errors import Deferred, PermanentError, TransientError
from choreo.outbox_store import claim, settle
from choreo.testing import HandlerHarness, Prepared
from choreo.topology import Topology


@dataclass(frozen=True)
class Consumer:
    durable: str
    service: str
    harness: HandlerHarness
    types: frozenset[str]


@dataclass
class Delivery:
    consumer: Consumer
    envelope: Envelope
    #: A second copy was already put back (each delivery is duplicated at most once).
    duplicated: bool = False


@dataclass
class Commit:
    """A delivery whose ``prepare`` ran, waiting for its transaction."""

    delivery: Delivery
    prepared: Prepared


#: A command a test runs at a moment of its choosing (a user's cancel, a new booking).
Command = Callable[[], Awaitable[None]]


@dataclass
class Bus:
    """Consumers of the topologies, and what is waiting to be delivered or run.

    Attributes:
        published: Every fact published, once each (a duplicate delivery is not a new fact).
        dead: Facts a handler refused for good (``PermanentError``): a correct saga has none.
        retries: Deliveries that raised a transient error or ``Deferred`` and came back.
        duplicates: Deliveries made a second time.
    """

    engines: dict[str, AsyncEngine]
    consumers: list[Consumer]
    pending: list[Delivery | Commit | Command] = field(default_factory=list)
    held: list[Delivery] = field(default_factory=list)
    published: list[Envelope] = field(default_factory=list)
    dead: list[tuple[str, Envelope, str]] = field(default_factory=list)
    retries: int = 0
    duplicates: int = 0
    steps: int = 0

    @classmethod
    def of(cls, engines: dict[str, AsyncEngine], topologies: Iterable[Topology]) -> Bus:
        consumers = [
            Consumer(
                sub.durable,
                t.service,
                HandlerHarness(engines[t.service], sub.routes, consumer=sub.durable, source=t.service),
                frozenset(type_name(r.message_type) for r in sub.routes),
            )
            for t in topologies
            for sub in t.subscriptions
        ]
        return cls(engines, consumers)

    async def relay(self) -> None:
        """Publishes what every service committed to its outbox, in each outbox's order."""
        for engine in self.engines.values():
            async with engine.begin() as conn:
                rows = await claim(conn, 10_000, 60)
                await settle(conn, published=[r.id for r in rows], parked={}, released=[])
            for row in rows:
                self.publish(Envelope.from_headers(row.subject, row.headers, row.payload))

    def publish(self, env: Envelope, *, hold: Callable[[Consumer, Envelope], bool] | None = None) -> None:
        self.published.append(env)
        for consumer in self.consumers:
            if env.type in consumer.types:
                delivery = Delivery(consumer, env)
                if hold is not None and hold(consumer, env):
                    self.held.append(delivery)
                else:
                    self.pending.append(delivery)

    async def step(self, index: int, *, again: bool = False) -> None:
        """Runs the waiting item at ``index``; ``again``: deliver that fact once more later (once)."""
        item = self.pending.pop(index % len(self.pending))
        self.steps += 1
        if isinstance(item, Delivery):
            if again and not item.duplicated:
                self.duplicates += 1
                self.pending.append(Delivery(item.consumer, item.envelope, duplicated=True))
            await self._run(item, lambda: self._prepare(item))
        elif isinstance(item, Commit):
            await self._run(item.delivery, lambda: item.delivery.consumer.harness.commit(item.prepared))
        else:
            await item()
        await self.relay()

    async def _prepare(self, delivery: Delivery) -> None:
        prepared = await delivery.consumer.harness.prepare(delivery.envelope)
        if prepared.route.prepare is None:
            await delivery.consumer.harness.commit(prepared)
        elif not prepared.duplicate:
            self.pending.append(Commit(delivery, prepared))

    async def _run(self, delivery: Delivery, run: Callable[[], Awaitable[object]]) -> None:
        """Runs a step of a delivery; a retry starts it again from its ``prepare``, as a redelivery does."""
        try:
            await run()
        except (TransientError, Deferred):
            self.retries += 1
            self.pending.append(delivery)
        except PermanentError as exc:
            self.dead.append((delivery.consumer.durable, delivery.envelope, repr(exc)))

    def release_held(self) -> None:
        self.pending.extend(self.held)
        self.held.clear()

    def of_type(self, name: str) -> list[Envelope]:
        return [e for e in self.published if e.type.endswith("." + name)]
