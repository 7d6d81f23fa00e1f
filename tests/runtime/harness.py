"""Building blocks of the runtime conformance suite.

A tiny "payment-like" test service: it consumes ``booking.created`` from the
BOOKING stream, records one row per handled event in ``rt_effect`` (the effect
whose count proves exactly-once processing) and emits ``PaymentSucceeded``
through the outbox. ``Probe`` scripts its behaviour per booking id (fail N
times, always fail, slow prepare) and records what the handler saw.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from nats.js import JetStreamContext
from nats.js.api import RawStreamMsg
from nats.js.errors import NotFoundError
from sqlalchemy import Column, Text, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import Field, SQLModel

from choreo.booking.v1 import events_pb2 as booking_events
from choreo.bus import ensure_stream
from choreo.consumer import EventConsumer
from choreo.db import BigIntId, create_tables, make_engine
from choreo.envelope import Envelope
from choreo.handler import HandlerContext, Route
from choreo.outbox import OutboxRelay, outbox_table
from choreo.payment.v1 import events_pb2 as payment_events
from choreo.retry import RetryPolicy
from choreo.runtime import Runtime, open_runtime
from choreo.settings import ConsumerSettings
from choreo.topology import Subscription, Topology
from tests.streams import BOOKING, BOOKING_CREATED, BOOKING_STREAM, DLQ_STREAM, PAYMENT
from tests.support import row_count

SERVICE = "rt-payment"
DURABLE = "rt-payment"
#: The test service publishes on PAYMENT (the facts its handler emits) and consumes BOOKING.
TOPOLOGY = Topology(service=SERVICE, stream=PAYMENT, publishes=(payment_events.PaymentSucceeded,))


class Effect(SQLModel, table=True):
    """One committed effect of one handled event (test-only table)."""

    __tablename__ = "rt_effect"

    id: int | None = Field(default=None, sa_column=Column(BigIntId, primary_key=True, autoincrement=True))
    booking_id: str = Field(max_length=64)
    event_id: str = Field(max_length=64)
    correlation_id: str = Field(max_length=64)
    prepared: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))


effect_table = Effect.__table__  # type: ignore[attr-defined]


class Boom(RuntimeError):
    """The scripted failure of a test handler."""


@dataclass
class Probe:
    """Scripts the test handler and records what it saw.

    Attributes:
        fail_times: Booking ids whose handler raises this many more times.
        always_fail: Booking ids whose handler always raises.
        prepare_delay: Seconds each ``prepare`` call sleeps.
        handle_delay: Seconds each handler call sleeps (inside the transaction).
        prepare_fail_times: Booking ids whose ``prepare`` raises this many more times.
        hang: Booking ids whose handler never returns (as if it had killed the process).
        error: The exception class the scripted failures raise.
        calls: ``(booking_id, monotonic time)`` of every handler invocation.
        prepare_calls: Booking ids passed to ``prepare``, in call order.
        prepare_peak: Most ``prepare`` calls in flight at once.
    """

    fail_times: dict[str, int] = field(default_factory=dict)
    always_fail: set[str] = field(default_factory=set)
    prepare_delay: float = 0.0
    handle_delay: float = 0.0
    prepare_fail_times: dict[str, int] = field(default_factory=dict)
    hang: set[str] = field(default_factory=set)
    error: type[Exception] = Boom
    calls: list[tuple[str, float]] = field(default_factory=list)
    prepare_calls: list[str] = field(default_factory=list)
    prepare_peak: int = 0
    _prepare_inflight: int = 0

    def calls_for(self, booking_id: str) -> list[float]:
        return [t for b, t in self.calls if b == booking_id]

    async def handle(self, message: booking_events.BookingCreated, ctx: HandlerContext) -> None:
        """Records the effect and emits ``PaymentSucceeded`` (or fails as scripted)."""
        booking_id = message.booking_id
        self.calls.append((booking_id, time.monotonic()))
        await asyncio.sleep(self.handle_delay)
        if booking_id in self.hang:
            await asyncio.Event().wait()
        if booking_id in self.always_fail:
            raise self.error(f"always failing {booking_id}")
        left = self.fail_times.get(booking_id, 0)
        if left > 0:
            self.fail_times[booking_id] = left - 1
            raise self.error(f"failing {booking_id}, {left - 1} failure(s) left")
        await ctx.conn.execute(
            insert(effect_table).values(
                booking_id=booking_id,
                event_id=ctx.envelope.id,
                correlation_id=ctx.envelope.correlation_id,
                prepared=str(ctx.prepared or ""),
            )
        )
        ctx.emit(
            payment_events.PaymentSucceeded(
                payment_id=f"pay-{booking_id}",
                booking_id=booking_id,
                amount_cents=message.amount_cents,
                currency=message.currency,
            )
        )

    async def prepare(self, message: booking_events.BookingCreated, envelope: Envelope) -> str:
        """Sleeps like a call to the outside world; returns a value the handler stores."""
        self.prepare_calls.append(message.booking_id)
        self._prepare_inflight += 1
        self.prepare_peak = max(self.prepare_peak, self._prepare_inflight)
        try:
            await asyncio.sleep(self.prepare_delay)
        finally:
            self._prepare_inflight -= 1
        left = self.prepare_fail_times.get(message.booking_id, 0)
        if left > 0:
            self.prepare_fail_times[message.booking_id] = left - 1
            raise self.error(f"provider unavailable for {message.booking_id}")
        return f"prepared:{message.booking_id}:{envelope.id}"

    def routes(self, *, with_prepare: bool = False) -> list[Route[booking_events.BookingCreated]]:
        return [
            Route(
                booking_events.BookingCreated,
                self.handle,
                emits=(payment_events.PaymentSucceeded,),
                prepare=self.prepare if with_prepare else None,
            )
        ]


def settings_for(nats_url: str, database_url: str, **overrides: Any) -> ConsumerSettings:
    """Settings of the test service; retries are fast so the suite stays quick."""
    values: dict[str, Any] = {
        "service_name": SERVICE,
        "nats_url": nats_url,
        "database_url": database_url,
        "batch_size": 64,
        "max_deliveries": 3,
        "retry_backoff_seconds": 0.3,
        "retry_backoff_max_seconds": 2.0,
        "ack_wait_seconds": 5.0,
        "shutdown_grace_seconds": 5.0,
        "log_format": "text",
    }
    values.update(overrides)
    return ConsumerSettings(**values)


async def open_test_runtime(settings: ConsumerSettings, *, poll_interval: float = 0.2) -> Runtime:
    """The runtime of the test service, plus the BOOKING stream it consumes.

    The relay is replaced by one with a short poll interval and publish timeout
    so outage tests recover in about a second instead of the production defaults.
    """
    rt = await open_runtime(settings, TOPOLOGY, migrations=None)
    # The test service's own table has no revisions: created as it is, for the test only.
    await create_tables(rt.engine, [effect_table])
    await ensure_stream(rt.js, BOOKING)
    rt.relay = OutboxRelay(
        rt.engine,
        rt.js,
        poll_interval=poll_interval,
        publish_timeout=1.0,
        stages=rt.stages,
        stream_of=TOPOLOGY.stream_of,
    )
    return rt


async def close_runtime(rt: Runtime) -> None:
    if not rt.nc.is_closed:
        # nats-py raises from close() when the server died under it; closed is closed.
        with contextlib.suppress(ConnectionError):
            await rt.nc.close()
    await rt.engine.dispose()


@asynccontextmanager
async def running(*components: Any) -> AsyncIterator[list[asyncio.Task[None]]]:
    """Runs components (``run``/``stop``) in the background; stops them on exit.

    A component that crashed meanwhile fails the test with its own exception.
    """
    tasks = [asyncio.create_task(c.run()) for c in components]
    try:
        yield tasks
    finally:
        for c in components:
            c.stop()
        _, pending = await asyncio.wait(tasks, timeout=10)
        for task in pending:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    crashed = [r for r in results if isinstance(r, Exception)]
    if crashed:
        raise crashed[0]
    assert not pending, f"{len(pending)} component(s) did not stop within 10 s"


def booking_created(booking_id: str, amount_cents: int = 1000) -> booking_events.BookingCreated:
    return booking_events.BookingCreated(
        booking_id=booking_id,
        user_id="user-1",
        amount_cents=amount_cents,
        currency="EUR",
        payment_token="tok_visa",
    )


def envelope_for(
    booking_id: str,
    *,
    event_id: str | None = None,
    correlation_id: str | None = None,
    causation_id: str = "",
) -> Envelope:
    """The envelope of a ``BookingCreated`` as the booking service would publish it."""
    return Envelope.wrap(
        booking_created(booking_id),
        source="booking",
        subject=BOOKING_CREATED,
        correlation_id=correlation_id or f"wf-{booking_id}",
        causation_id=causation_id,
        event_id=event_id,
    )


async def publish_raw(
    js: JetStreamContext, subject: str, data: bytes, headers: dict[str, str] | None = None
) -> int:
    ack = await js.publish(subject, data, headers=headers)
    return int(ack.seq)


async def stream_messages(js: JetStreamContext, stream: str) -> list[RawStreamMsg]:
    """Every message the stream holds, in sequence order."""
    info = await js.stream_info(stream)
    out: list[RawStreamMsg] = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        if info.state.messages == 0:
            break
        try:
            out.append(await js.get_msg(stream, seq))
        except NotFoundError:
            continue
    return out


async def dlq_messages(js: JetStreamContext) -> list[RawStreamMsg]:
    return await stream_messages(js, DLQ_STREAM)


async def effects(engine: AsyncEngine) -> list[dict[str, Any]]:
    """The committed effects, oldest first."""
    async with engine.connect() as conn:
        rows = (await conn.execute(select(effect_table).order_by(effect_table.c.id))).mappings().all()
        await conn.rollback()
    return [dict(r) for r in rows]


async def outbox_size(engine: AsyncEngine) -> int:
    return await row_count(engine, outbox_table)


async def outbox_empty(engine: AsyncEngine) -> bool:
    return await outbox_size(engine) == 0


async def consumer_settled(js: JetStreamContext, stream: str, durable: str) -> bool:
    """True when the durable consumer has nothing pending and nothing unacknowledged."""
    try:
        info = await js.consumer_info(stream, durable)
    except NotFoundError:  # not provisioned yet
        return False
    return bool(info.num_pending == 0 and info.num_ack_pending == 0)


def reader_engine(database_url: str) -> AsyncEngine:
    """A second engine on the same database, for assertions independent of the service's."""
    return make_engine(database_url, writer=False)


def consumer_for(rt: Runtime, routes: Sequence[Route[Any]], **overrides: Any) -> EventConsumer:
    """The test service's consumer of ``booking.created``.

    Without overrides this is exactly ``Runtime.consumer``; overrides build an
    ``EventConsumer`` directly (e.g. a custom ``on_commit``).
    """
    if not overrides:
        subscription = Subscription(DURABLE, tuple(routes))
        # Each test scripts its own routes: the test service declares them before consuming.
        rt.topology = dataclasses.replace(TOPOLOGY, subscriptions=(subscription,))
        return rt.consumer(subscription)
    s = rt.settings
    kwargs: dict[str, Any] = {
        "js": rt.js,
        "engine": rt.engine,
        "stream": BOOKING_STREAM,
        "durable": DURABLE,
        "subjects": [BOOKING_CREATED],
        "routes": routes,
        "source": s.service_name,
        "retry": RetryPolicy(s.max_deliveries, s.retry_backoff_seconds, s.retry_backoff_max_seconds),
        "batch_size": s.batch_size,
        "ack_wait_seconds": s.ack_wait_seconds,
        "on_commit": rt.relay.notify,
    }
    kwargs.update(overrides)
    return EventConsumer(**kwargs)
