"""Durable pull consumer: batches, one transaction per batch, retries, dead letters.

Each round fetches up to ``batch_size`` facts. First deliveries are handled
together: their ``prepare`` steps run concurrently, and all their effects
(inbox records, handler writes, outbox rows) commit in one transaction. If that
commit fails for a reason other than an unavailable database, each fact is run
again in its own transaction, so one bad fact cannot hold the others back.

A fact that comes back (redelivered after a failure, a crash or a hand-back)
has its runs recorded in ``choreo.attempts``: JetStream's delivery count also
counts deliveries that never reached the handler, and judging by it would
dead-letter the innocent batch-mates of a fact that crashed the process. One
whose last run vanished with another process runs alone, so that only it is
counted if it kills the process again.

What becomes of each fact afterwards (ack, retry with backoff, DLQ) is
``choreo.verdicts``': transient failures are retried without a limit, permanent
ones dead-lettered at once, others after ``max_deliveries`` failed runs. A run
past ``run_timeout`` counts as a failed run, so a hung fact holds nothing forever.

While a fact waits in the pull buffer or is worked on, it is kept alive
(``choreo.keepalive``), so a provider slower than the ack wait does not get it
redelivered and run twice. A fact whose effect is already committed (in the
inbox) is acknowledged without running its ``prepare`` step, so a redelivery
never calls the provider again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from google.protobuf.message import DecodeError
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from sqlalchemy.ext.asyncio import AsyncEngine

from choreo import attempts
from choreo.db import read_only
from choreo.dispatch import Dispatch, UnknownFactType
from choreo.envelope import Envelope, EnvelopeError
from choreo.errors import Failure, classify
from choreo.handler import HandlerContext, Route
from choreo.inbox import already_processed, record_processed
from choreo.keepalive import KeepAlive
from choreo.logs import log_context
from choreo.metrics import Stages
from choreo.outbox import add_to_outbox
from choreo.pull import PullReader, PullStalled
from choreo.retry import RetryPolicy
from choreo.verdicts import Delivery, Verdicts, guarded, hand_back, hung

log = logging.getLogger(__name__)


class EventConsumer:
    """Consumes one stream through a durable pull consumer.

    Args:
        js: JetStream context.
        nc: The connection to pull on (default: the one ``js`` uses).
        engine: The service's database (inbox, attempts, handler writes, outbox).
        stream: Stream to consume.
        durable: Durable consumer name; replicas sharing it share the work.
        subjects: Subject filters.
        routes: The event types handled; any other type is dead-lettered.
        source: This service's name, stamped on emitted facts.
        retry: Backoff, and the failures (or crashes) before dead-lettering.
        batch_size: Events fetched and committed together.
        concurrency: ``prepare`` steps run at once.
        ack_wait_seconds: Time before JetStream redelivers an event nobody said is in progress.
        on_commit: Called after each commit that queued outgoing events
            (wakes the outbox relay).
        max_in_flight_batches: Batches handled at once; by default 4 when a
            route has a ``prepare`` step (their prepare steps overlap, their
            commits still take turns), else 1.
        stages: Where to add the time of each stage (``choreo.metrics``).
        ensure_dlq: Provisions the DLQ stream again, after it refused a copy.
        run_timeout_seconds: Longest a run (a ``prepare`` step, a transaction of handlers) may take.
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
        routes: Iterable[Route[Any]],
        source: str,
        retry: RetryPolicy | None = None,
        batch_size: int = 256,
        concurrency: int = 64,
        ack_wait_seconds: float = 30.0,
        on_commit: Callable[[], None] | None = None,
        max_in_flight_batches: int | None = None,
        stages: Stages | None = None,
        ensure_dlq: Callable[[], Awaitable[None]] | None = None,
        run_timeout_seconds: float = 120.0,
    ) -> None:
        self._js = js
        self._nc: NATS = nc if nc is not None else js._nc
        self._reader: PullReader | None = None
        self._engine = engine
        self.stream = stream
        self.durable = durable
        self._subjects = list(subjects)
        self._routes = Dispatch(routes)
        self._has_prepare = any(r.prepare is not None for r in self._routes)
        self._max_in_flight = max_in_flight_batches or (4 if self._has_prepare else 1)
        self._commit_turn = asyncio.Lock()
        self._source = source
        self._retry = retry or RetryPolicy()
        self._batch_size = batch_size
        self._semaphore = asyncio.Semaphore(concurrency)
        self._ack_wait = ack_wait_seconds
        self._on_commit = on_commit
        self._stages = stages or Stages(source)
        self._run_timeout = run_timeout_seconds
        self._keep_alive = KeepAlive(ack_wait_seconds)
        self._stopping = asyncio.Event()
        self._verdicts = Verdicts(
            js=js,
            engine=engine,
            stream=stream,
            durable=durable,
            retry=self._retry,
            ensure_dlq=ensure_dlq,
            log_fields=self._log_fields,
            stages=self._stages,
        )

    @property
    def processed(self) -> int:
        """Facts acknowledged after their effect was committed (or found committed)."""
        return self._verdicts.processed

    @property
    def dead_lettered(self) -> int:
        return self._verdicts.dead_lettered

    @property
    def dlq_failures(self) -> int:
        """Dead-letterings the DLQ refused (the fact was kept and comes back)."""
        return self._verdicts.dlq_failures

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
        self._keep_alive = KeepAlive(self._ack_wait, reader.waiting)
        ticker = asyncio.create_task(self._keep_alive.run(), name=f"{self.durable}-keepalive")
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
            ticker.cancel()
            await asyncio.gather(ticker, return_exceptions=True)
            await hand_back(await reader.stop())

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
                await hand_back(await reader.start())
                return True
            except Exception as exc:
                if attempt % 10 == 0:
                    log.warning("cannot consume %s yet (%r); waiting", self.stream, exc)
                attempt += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), min(2.0, 0.2 * attempt))
        return False

    async def handle_batch(self, msgs: Sequence[Msg]) -> None:
        """Handles one fetched batch: decode, prepare, commit, then ack, retry or dead-letter each."""
        deliveries: list[Delivery] = []
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
        self._keep_alive.hold(d.msg for d in deliveries)
        try:
            await self._run(deliveries)
        except Exception as exc:  # a bug here must not kill the consumer: every fact comes back
            log.exception("batch of %d could not be handled", len(deliveries))
            for d in deliveries:
                if d.error is None and not d.duplicate:
                    d.error = exc
        for d in deliveries:
            await self._verdicts.settle(d)
            self._keep_alive.release(d.msg)

    async def _run(self, deliveries: list[Delivery]) -> None:
        if self._has_prepare:
            # A fact whose effect is committed must not call the outside world again.
            try:
                await self._mark_duplicates(deliveries)
            except Exception as exc:
                for d in deliveries:
                    d.error = exc
                return
        todo = [d for d in deliveries if not d.duplicate]
        again = [d for d in todo if d.again]
        if again:
            try:
                await self._sort_returning(again)
            except Exception as exc:  # the database is unavailable: they come back later
                for d in again:
                    d.error = exc
        together = [d for d in todo if d.error is None and not d.give_up and not d.alone]
        if together:
            await self._handle_together(together)
        for d in todo:
            if d.alone and d.error is None and not d.give_up:
                await self._handle_alone(d)

    async def _sort_returning(self, again: list[Delivery]) -> None:
        """Reads the records of facts that came back: crash suspects run alone, the rest together."""
        limit = self._retry.max_deliveries
        records = await attempts.read(self._engine, self.durable, [d.envelope.id for d in again])
        together = []
        for d in again:
            d.record = records.get(d.envelope.id)
            if d.record is not None and d.record.failures >= limit:
                # It failed enough already; only dead-lettering it failed last time.
                d.give_up = f"failed {d.record.failures} times"
            elif d.record is not None and d.record.suspect:
                d.alone = True
            else:
                together.append(d)
        if together:
            begun = await attempts.begin(
                self._engine, self.durable, [d.envelope.id for d in together], alone=False
            )
            for d in together:
                d.record = begun.get(d.envelope.id, d.record)

    async def _mark_duplicates(self, deliveries: list[Delivery]) -> None:
        async with read_only(self._engine) as conn:
            seen = await already_processed(conn, self.durable, (d.envelope.id for d in deliveries))
            await conn.rollback()
        for d in deliveries:
            if d.envelope.id in seen:
                d.duplicate = True
                log.info("duplicate %s skipped", d.envelope.id, extra=self._log_fields(d))

    async def _handle_together(self, deliveries: list[Delivery]) -> None:
        await self._prepare(deliveries)
        ready = [d for d in deliveries if d.error is None]
        if not ready:
            return
        async with self._commit_turn:
            try:
                await self._commit(ready)
                return
            except Exception as exc:
                if len(ready) == 1 or classify(exc) is Failure.TRANSIENT:
                    # Nothing to separate, or nothing a fact did: running them again would
                    # only add attempts. They come back after the backoff.
                    for d in ready:
                        d.error = exc
                    return
                log.warning("batch of %d failed (%r); running them one by one", len(ready), exc)
            for d in ready:
                try:
                    await self._commit([d])
                except Exception as one_exc:
                    d.error = one_exc

    async def _handle_alone(self, d: Delivery) -> None:
        """Runs a crash suspect on its own, after recording the run (see ``choreo.attempts``)."""
        try:
            begun = await attempts.begin(self._engine, self.durable, [d.envelope.id], alone=True)
        except Exception as exc:  # the database is unavailable: try again later
            d.error = exc
            return
        d.record = begun[d.envelope.id]
        if d.record.crashes >= self._retry.max_deliveries:
            d.give_up = f"crashed or hung the process {d.record.crashes} times, running alone"
            return
        await self._prepare([d])
        if d.error is not None:
            return
        async with self._commit_turn:
            try:
                await self._commit([d])
            except Exception as exc:
                d.error = exc

    async def _decode(self, msg: Msg) -> Delivery | None:
        meta = msg.metadata
        try:
            env = Envelope.from_headers(msg.subject, msg.headers, msg.data)
            route, message = self._routes.decode(env)
        except UnknownFactType as exc:
            await self._verdicts.dead_letter(msg, f"undecodable: {exc} for consumer {self.durable}")
            return None
        except (EnvelopeError, DecodeError) as exc:
            await self._verdicts.dead_letter(msg, f"undecodable: {exc}")
            return None
        return Delivery(msg, env, message, route, meta.sequence.stream, meta.num_delivered)

    async def _prepare(self, deliveries: list[Delivery]) -> None:
        async def one(d: Delivery) -> None:
            if d.route.prepare is None:
                return
            async with self._semaphore:
                with log_context(**self._log_fields(d)), self._stages.timed("prepare"):
                    try:
                        async with asyncio.timeout(self._run_timeout) as deadline:
                            d.prepared = await guarded(d.route.prepare(d.message, d.envelope))
                    except Exception as exc:
                        d.error = hung("prepare", self._run_timeout) if deadline.expired() else exc

        await asyncio.gather(*(one(d) for d in deliveries))

    async def _commit(self, deliveries: list[Delivery]) -> None:
        """One transaction for the deliveries' handlers; past ``run_timeout`` it is abandoned."""
        if not deliveries:
            return
        try:
            async with asyncio.timeout(self._run_timeout) as deadline:
                await self._transaction(deliveries)
        except TimeoutError:
            if deadline.expired():
                raise hung("transaction", self._run_timeout) from None
            raise

    async def _transaction(self, deliveries: list[Delivery]) -> None:
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
                ctx = HandlerContext(conn, d.envelope, self._source, d.sequence, d.prepared, d.route.emits)
                with log_context(**self._log_fields(d)), self._stages.timed("handler"):
                    await guarded(d.route.handle(d.message, ctx))
                outgoing.extend(ctx.outgoing)
                fresh.append((d.envelope.id, d.sequence))
            await record_processed(conn, self.durable, fresh)
            await add_to_outbox(conn, outgoing)
            await attempts.clear(
                conn, self.durable, [d.envelope.id for d in deliveries if d.record is not None]
            )
            committing = time.perf_counter()
        done = time.perf_counter()
        self._stages.observe("consume_commit", done - committing)
        self._stages.observe("consume_transaction", done - started)
        if outgoing and self._on_commit is not None:
            self._on_commit()

    def _log_fields(self, d: Delivery) -> dict[str, Any]:
        return {
            "correlation_id": d.envelope.correlation_id,
            "event_type": d.envelope.type,
            "event_id": d.envelope.id,
            "stream": self.stream,
            "stream_seq": d.sequence,
        }
