"""Testing a service's handlers without a nats-server: one fact in, its effects out.

A handler's correctness is mostly about its transaction: what it writes, what it
emits, what it refuses. ``HandlerHarness`` feeds a decoded fact to a ``Route``
the way the consumer (``choreo.consumer``) does, with the same runtime pieces and
in the same order, on a real database with the service's real schema:

1. for a route with a ``prepare`` step: ``already_processed``, so that a fact
   whose event id is in the inbox does not call the outside world again, then
   ``prepare``, outside the transaction;
2. in one transaction: ``already_processed`` (again), ``handle``,
   ``record_processed``, ``add_to_outbox``; an exception rolls it all back and
   is raised to the test.

What JetStream adds (delivery, acks, retries, the DLQ) is not here: the tests of
``choreo.consumer`` cover it once for every service.

Example::

    async with handler_harness(ROUTES, consumer="booking", migrations=MIGRATIONS) as h:
        handled = await h.deliver(PaymentSucceeded(...), correlation_id="wf-1", source="payment")
        [confirmed] = handled.decoded(BookingConfirmed)
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from google.protobuf.message import Message
from sqlalchemy.ext.asyncio import AsyncEngine

from choreo.contract import fact_subject, type_name
from choreo.db import make_engine, read_only
from choreo.dispatch import Dispatch, UnknownFactType
from choreo.envelope import Envelope
from choreo.handler import HandlerContext, Route
from choreo.ids import new_id
from choreo.inbox import already_processed, record_processed
from choreo.outbox import add_to_outbox
from choreo.schema import Migrations, prepare_schema
from choreo.verdicts import guarded

__all__ = ["Handled", "HandlerHarness", "Prepared", "handler_harness", "prepare_database"]

M = TypeVar("M", bound=Message)


@dataclass(frozen=True, slots=True)
class Handled:
    """What one delivered fact did.

    Attributes:
        envelope: The fact as delivered (its id is the one to deliver again to test the inbox).
        emitted: The facts the handler queued, in order; committed to the outbox with its writes.
        duplicate: The event id was already processed: nothing ran.
    """

    envelope: Envelope
    emitted: tuple[Envelope, ...]
    duplicate: bool = False

    def decoded(self, message_type: type[M]) -> list[M]:
        """The emitted facts of ``message_type``, decoded from their bytes as a subscriber would."""
        name = type_name(message_type)
        return [env.decode(message_type) for env in self.emitted if env.type == name]


@dataclass(frozen=True, slots=True)
class Prepared:
    """A fact whose route's ``prepare`` step ran (``HandlerHarness.prepare``), waiting for its commit.

    Attributes:
        result: What ``prepare`` returned (``None`` for a route without one).
        duplicate: The event id was already processed: ``prepare`` did not run.
    """

    envelope: Envelope
    route: Route[Any]
    message: Message
    result: Any = None
    duplicate: bool = False


class HandlerHarness:
    """Delivers facts to a service's routes on a prepared database, one transaction each.

    Args:
        engine: The service's database, its schema already prepared.
        routes: The routes the consumer would be given.
        consumer: The durable consumer's name: the inbox's key.
        source: The service's name, stamped on what it emits.
    """

    def __init__(
        self, engine: AsyncEngine, routes: Iterable[Route[Any]], *, consumer: str, source: str
    ) -> None:
        self.engine = engine
        self._routes = Dispatch(routes)
        self._consumer = consumer
        self._source = source

    async def deliver(
        self,
        message: Message,
        *,
        correlation_id: str = "",
        causation_id: str = "",
        source: str = "test",
        event_id: str | None = None,
        subject: str | None = None,
        stream_sequence: int = 1,
    ) -> Handled:
        """Wraps ``message`` in an envelope as its publisher would, then handles it (``handle``)."""
        event_id = event_id or new_id()
        env = Envelope.wrap(
            message,
            source=source,
            subject=subject or fact_subject(type(message)),
            # A fact without a correlation id starts its own workflow (``Envelope.from_headers``).
            correlation_id=correlation_id or event_id,
            causation_id=causation_id,
            event_id=event_id,
        )
        return await self.handle(env, stream_sequence=stream_sequence)

    async def handle(self, env: Envelope, *, stream_sequence: int = 1) -> Handled:
        """Runs the route of ``env``'s type as the consumer would; raises what the handler raised.

        Raises:
            LookupError: no route handles ``env.type`` (the consumer dead-letters it).
        """
        prepared = await self.prepare(env)
        if prepared.duplicate:
            return Handled(env, (), duplicate=True)
        return await self.commit(prepared, stream_sequence=stream_sequence)

    async def prepare(self, env: Envelope) -> Prepared:
        """The first half of ``handle``: the route's ``prepare`` step, outside any transaction.

        A test may run other deliveries before ``commit``, as concurrent consumers (or
        replicas) do between one fact's call to the outside world and its transaction.

        Raises:
            LookupError: no route handles ``env.type``.
        """
        try:
            route, message = self._routes.decode(env)
        except UnknownFactType as exc:
            raise LookupError(f"{exc} in consumer {self._consumer}") from None
        if route.prepare is None:
            return Prepared(env, route, message)
        if await self._seen(env):  # a committed fact never calls the outside world again
            return Prepared(env, route, message, duplicate=True)
        return Prepared(env, route, message, await guarded(route.prepare(message, env)))

    async def commit(self, prepared: Prepared, *, stream_sequence: int = 1) -> Handled:
        """The second half of ``handle``: the handler, the inbox and the outbox in one transaction."""
        env = prepared.envelope
        async with self.engine.begin() as conn:
            if await already_processed(conn, self._consumer, [env.id]):
                return Handled(env, (), duplicate=True)
            ctx = HandlerContext(
                conn=conn,
                envelope=env,
                source=self._source,
                stream_sequence=stream_sequence,
                prepared=prepared.result,
                emits=prepared.route.emits,
            )
            await guarded(prepared.route.handle(prepared.message, ctx))
            await record_processed(conn, self._consumer, [(env.id, stream_sequence)])
            await add_to_outbox(conn, ctx.outgoing)
        return Handled(env, tuple(ctx.outgoing))

    async def _seen(self, env: Envelope) -> bool:
        async with read_only(self.engine) as conn:
            seen = await already_processed(conn, self._consumer, [env.id])
            await conn.rollback()
        return bool(seen)


async def prepare_database(path: Path, migrations: Migrations | None, *, service: str) -> Path:
    """Creates the SQLite file ``path`` holding the runtime's tables and ``migrations``' ones.

    Preparing a schema runs every Alembic revision (a tenth of a second or more):
    a suite prepares one file and each harness starts from a copy of it
    (``handler_harness(schema=...)``).
    """
    engine = make_engine(f"sqlite+aiosqlite:///{path}", synchronous="NORMAL")
    try:
        await prepare_schema(engine, migrations, mode="auto", service=service, setting="(harness)")
    finally:
        await engine.dispose()  # the last connection closed: the WAL is checkpointed into the file
    return path


@asynccontextmanager
async def handler_harness(
    routes: Iterable[Route[Any]],
    *,
    consumer: str,
    migrations: Migrations | None = None,
    schema: Path | None = None,
    source: str | None = None,
) -> AsyncIterator[HandlerHarness]:
    """A harness on a fresh SQLite database in a temporary folder, removed afterwards.

    Args:
        routes: The service's routes.
        consumer: The durable consumer's name.
        migrations: The service's own tables and revisions (None: only the runtime's).
        schema: A file made by ``prepare_database`` to start from a copy of, instead of
            running the revisions of ``migrations`` again.
        source: The service's name (default: ``consumer``).
    """
    with tempfile.TemporaryDirectory(prefix="choreo-harness-") as folder:
        path = Path(folder) / "service.db"
        if schema is None:
            await prepare_database(path, migrations, service=consumer)
        else:
            shutil.copyfile(schema, path)
        engine = make_engine(f"sqlite+aiosqlite:///{path}", synchronous="NORMAL")
        try:
            yield HandlerHarness(engine, routes, consumer=consumer, source=source or consumer)
        finally:
            await engine.dispose()
