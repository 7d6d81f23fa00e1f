"""Durable pull consumer: batches, one transaction per batch, retries, dead letters.

Each round fetches up to ``batch_size`` events and commits all their effects in
one transaction (inbox records, handler writes, outbox rows). If that fails, the
events are replayed one transaction each, so one bad event cannot hold the
others back. A failing event is nak'ed with a growing delay; after
``max_deliveries`` it goes to the DLQ. An event that cannot be decoded, or whose
type no route knows, goes to the DLQ at once. The consumer always moves on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError, Message
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from sqlalchemy.ext.asyncio import AsyncEngine

from choreo.dlq import dead_letter
from choreo.envelope import Envelope, EnvelopeError
from choreo.handler import HandlerContext, Route
from choreo.inbox import already_processed, record_processed
from choreo.logs import log_context
from choreo.metrics import Stages
from choreo.outbox import add_to_outbox
from choreo.pull import PullReader, PullStalled
from choreo.retry import RetryPolicy

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Delivery:
    msg: Msg
    envelope: Envelope
    message: Message
    route: Route
    sequence: int
    deliveries: int
    prepared: Any = None
    error: BaseException | None = None


class EventConsumer:
    """Consumes one stream through a durable pull consumer.

    Args:
        js: JetStream context.
        nc: The connection to pull on (default: the one ``js`` uses).
        engine: The service's database (inbox, handler writes, outbox).
        stream: Stream to consume.
        durable: Durable consumer name; replicas sharing it share the work.
        subjects: Subject filters.
        routes: The event types handled; any other type is dead-lettered.
        source: This service's name, stamped on emitted facts.
        retry: Backoff and maximum deliveries.
        batch_size: Events fetched and committed together.
        concurrency: ``prepare`` steps run at once.
        ack_wait_seconds: Time before JetStream redelivers an unacknowledged event.
        on_commit: Called after each commit that queued outgoing events
            (wakes the outbox relay).
        max_in_flight_batches: Batches handled at once; by default 4 when a
            route has a ``prepare`` step (their prepare steps overlap, their
            commits still take turns), else 1.
        stages: Where to add the time of each stage (``choreo.metrics``).
    """

    def __init__(
        self,
        *,
        js: JetStreamContext,
        engine: AsyncEngine,
        nc: NATS | None = None,
        stream: str,
        durable: str,
        subjects: Sequence[str],
        routes: Iterable[Route],
        source: str,
        retry: RetryPolicy | None = None,
        batch_size: int = 256,
        concurrency: int = 64,
        ack_wait_seconds: float = 30.0,
        on_commit: Callable[[], None] | None = None,
        max_in_flight_batches: int | None = None,
        stages: Stages | None = None,
    ) -> None:
        self._js = js
        self._nc: NATS = nc if nc is not None else js._nc
        self._reader: PullReader | None = None
        self._engine = engine
        self.stream = stream
        self.durable = durable
        self._subjects = list(subjects)
        self._routes = {r.type_name: r for r in routes}
        has_prepare = any(r.prepare is not None for r in self._routes.values())
        self._max_in_flight = max_in_flight_batches or (4 if has_prepare else 1)
        self._commit_turn = asyncio.Lock()
        self._source = source
        self._retry = retry or RetryPolicy()
        self._batch_size = batch_size
        self._semaphore = asyncio.Semaphore(concurrency)
        self._ack_wait = ack_wait_seconds
        self._on_commit = on_commit
        self._stages = stages or Stages(source)
        self._stopping = asyncio.Event()
        self.processed = 0
        self.dead_lettered = 0

    def config(self) -> ConsumerConfig:
        return ConsumerConfig(
            durable_name=self.durable,
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self._ack_wait,
            # We dead-letter ourselves; the server must never silently stop redelivering.
            max_deliver=-1,
            filter_subjects=self._subjects,
            max_ack_pending=max(1000, self._batch_size * 4),
        )

    async def provision(self) -> None:
        """Creates or updates the durable consumer."""
        await self._js.add_consumer(self.stream, self.config())

    def stop(self) -> None:
        """Finishes the batch in hand, then makes ``run`` return."""
        self._stopping.set()
        if self._reader is not None:
            self._reader.interrupt()

    async def run(self) -> None:
        """Pulls and handles events until ``stop`` is called."""
        reader = PullReader(self._nc, self.stream, self.durable, batch=self._batch_size)
        self._reader = reader
        if not await self._open(reader):
            return
        in_flight: set[asyncio.Task[None]] = set()
        try:
            while not self._stopping.is_set():
                try:
                    msgs = await reader.next_batch(self._batch_size)
                except PullStalled as exc:
                    # Server restarted, consumer deleted, or the connection is down: start over.
                    log.warning("consumer %s/%s stalled (%s); re-opening", self.stream, self.durable, exc)
                    await self._open(reader)
                    continue
                if not msgs:
                    continue
                if self._max_in_flight == 1:
                    await self.handle_batch(msgs)
                    continue
                # A slow prepare step (a provider call) must not hold back the events that
                # arrive meanwhile: their batch starts preparing at once.
                task = asyncio.create_task(self.handle_batch(msgs))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
                if len(in_flight) >= self._max_in_flight:
                    await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if in_flight:
                await asyncio.gather(*in_flight, return_exceptions=True)
            await _hand_back(await reader.stop())

    async def _open(self, reader: PullReader) -> bool:
        """Provisions the consumer and starts pulling, waiting while that is impossible.

        The stream belongs to the service that publishes it, which may start
        later than this one, and NATS may be down for a while: waiting (instead
        of crashing) keeps start-up order free and rides out outages.
        """
        attempt = 0
        while not self._stopping.is_set():
            try:
                await self.provision()
                await _hand_back(await reader.start())
                return True
            except Exception as exc:
                if attempt % 10 == 0:
                    log.warning("cannot consume %s yet (%r); waiting", self.stream, exc)
                attempt += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), min(2.0, 0.2 * attempt))
        return False

    async def handle_batch(self, msgs: Sequence[Msg]) -> None:
        """Handles one fetched batch: decode, prepare, commit, then ack or retry."""
        deliveries: list[_Delivery] = []
        now = time.time()
        lag = 0.0
        for msg in msgs:
            delivery = await self._decode(msg)
            if delivery is not None:
                deliveries.append(delivery)
                lag += now - msg.metadata.timestamp.timestamp()
        if not deliveries:
            return
        self._stages.observe("consumer_lag", lag, len(deliveries))
        await self._prepare(deliveries)
        ready = [d for d in deliveries if d.error is None]
        async with self._commit_turn:
            try:
                await self._commit(ready)
            except Exception as exc:
                if len(ready) == 1:
                    # Nothing to separate: running the handler again would only double its attempts.
                    ready[0].error = exc
                    ready = []
                else:
                    log.warning("batch of %d failed (%r); retrying one by one", len(ready), exc)
                for d in ready:
                    try:
                        await self._commit([d])
                    except Exception as one_exc:
                        d.error = one_exc
        for d in deliveries:
            if d.error is None:
                await d.msg.ack()
                self.processed += 1
            else:
                await self._retry_or_dead_letter(d)

    async def _decode(self, msg: Msg) -> _Delivery | None:
        meta = msg.metadata
        try:
            env = Envelope.from_headers(msg.subject, msg.headers, msg.data)
            route = self._routes.get(env.type)
            if route is None:
                raise EnvelopeError(f"unknown event type {env.type!r} for consumer {self.durable}")
            message = env.decode(route.message_type)
        except (EnvelopeError, DecodeError) as exc:
            await self._dead_letter(msg, f"undecodable: {exc}")
            return None
        if meta.num_delivered > self._retry.max_deliveries:
            # It crashed the process (or timed out) on every delivery: stop trying.
            await self._dead_letter(msg, f"gave up after {meta.num_delivered - 1} deliveries")
            return None
        return _Delivery(msg, env, message, route, meta.sequence.stream, meta.num_delivered)

    async def _prepare(self, deliveries: list[_Delivery]) -> None:
        async def one(d: _Delivery) -> None:
            if d.route.prepare is None:
                return
            async with self._semaphore:
                with log_context(**self._log_fields(d)), self._stages.timed("prepare"):
                    try:
                        d.prepared = await d.route.prepare(d.message, d.envelope)
                    except Exception as exc:
                        d.error = exc

        await asyncio.gather(*(one(d) for d in deliveries))

    async def _commit(self, deliveries: list[_Delivery]) -> None:
        if not deliveries:
            return
        outgoing = []
        started = time.perf_counter()
        async with self._engine.begin() as conn:
            seen = await already_processed(conn, self.durable, (d.envelope.id for d in deliveries))
            fresh: list[tuple[str, int]] = []
            for d in deliveries:
                if d.envelope.id in seen:
                    log.info("duplicate %s skipped", d.envelope.id, extra=self._log_fields(d))
                    continue
                seen.add(d.envelope.id)
                ctx = HandlerContext(conn, d.envelope, self._source, d.sequence, d.prepared)
                with log_context(**self._log_fields(d)), self._stages.timed("handler"):
                    await d.route.handle(d.message, ctx)
                outgoing.extend(ctx.outgoing)
                fresh.append((d.envelope.id, d.sequence))
            await record_processed(conn, self.durable, fresh)
            await add_to_outbox(conn, outgoing)
            committing = time.perf_counter()
        done = time.perf_counter()
        self._stages.observe("consume_commit", done - committing)
        self._stages.observe("consume_transaction", done - started)
        if outgoing and self._on_commit is not None:
            self._on_commit()

    async def _retry_or_dead_letter(self, d: _Delivery) -> None:
        error = f"{type(d.error).__name__}: {d.error}"
        if self._retry.exhausted(d.deliveries):
            await self._dead_letter(d.msg, f"failed {d.deliveries} deliveries, last error {error}")
            return
        delay = self._retry.delay(d.deliveries)
        log.warning("handler failed, retry in %.1fs: %s", delay, error, extra=self._log_fields(d))
        await d.msg.nak(delay=delay)

    async def _dead_letter(self, msg: Msg, error: str) -> None:
        self.dead_lettered += 1
        await dead_letter(self._js, msg, self.durable, error)

    def _log_fields(self, d: _Delivery) -> dict[str, Any]:
        return {
            "correlation_id": d.envelope.correlation_id,
            "event_type": d.envelope.type,
            "event_id": d.envelope.id,
            "stream": self.stream,
            "stream_seq": d.sequence,
        }


async def _hand_back(msgs: Sequence[Msg]) -> None:
    """Naks events that were received but not handled, so they are redelivered now, not after ack_wait."""
    for msg in msgs:
        with contextlib.suppress(Exception):  # the connection may be gone; ack_wait covers that
            await msg.nak()
