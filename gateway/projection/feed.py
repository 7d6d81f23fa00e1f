"""Feeding the read model from one stream: read in order, apply in batches, commit with the checkpoint.

One ``StreamFeed`` per projected stream. It resumes from its checkpoint, so a
restart of the gateway or of NATS loses and repeats nothing, and deleting the
gateway's database rebuilds the same state by replaying the streams. The
checkpoint records the stream's identity (its creation time): a stream deleted
and created again (or one whose data JetStream lost) no longer matches it, and
the feed that sees it, at start-up or when it re-opens its reader, projects the
new stream from its start, keeping what the read model learned from the lost
facts; readiness is false until it has caught up. A schema version change
rebuilds the whole read model by replay (``ReadModel.rebuild``). A message
that cannot be read (no CloudEvents headers, a garbage body, an unknown type of
a known contract) is indexed in the trace when its headers allow, copied to the
DLQ, and passed over: it never blocks the feed for longer than the DLQ is
unavailable. While the copy cannot be stored (the DLQ stream deleted, JetStream
refusing), the feed retries with backoff, re-provisions the DLQ stream and logs
an error; it never passes the fact without its copy, so the checkpoint stays
before it until the copy is stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from choreo.bus import provision_stream
from choreo.dlq import DLQ, copy_to_dlq
from choreo.logs import log_context
from choreo.retry import Backoff
from gateway.projection.facts import read_fact
from gateway.projection.pull import Delivery, OrderedPull
from gateway.readmodel.store import ReadModel, WriteBatch

log = logging.getLogger(__name__)

#: Consumer name on the DLQ copies the projection makes (``dlq.<stream>.gateway-projection``).
DLQ_CONSUMER = "gateway-projection"

#: Pauses while projecting or storing a DLQ copy fails: 0.1, 0.2, 0.4, ... up to 2 s.
RETRY_BACKOFF = Backoff(0.1, 2.0)


class StreamFeed:
    """Projects one stream into the read model (a ``choreo.service.Component``).

    Args:
        nc: NATS connection.
        js: JetStream context.
        stream: The stream to project.
        store: The read model.
        batch_size: Most messages applied in one transaction.
        heartbeat: Idle heartbeat of the pull consumer (failure detection).
        dlq_replicas: Replicas of the DLQ stream when the feed has to re-create it.

    Attributes:
        caught_up: Set once the feed has applied everything the stream held when it started
            (or when the read model was last rebuilt).
        position: Last stream sequence committed to the read model.
        target: The stream's last sequence when the feed started (or the last rebuild).
    """

    def __init__(
        self,
        *,
        nc: NATS,
        js: JetStreamContext,
        stream: str,
        store: ReadModel,
        batch_size: int = 1000,
        heartbeat: float = 1.0,
        dlq_replicas: int = 1,
    ) -> None:
        self._nc = nc
        self._js = js
        self.stream = stream
        self._store = store
        self._batch_size = batch_size
        self._heartbeat = heartbeat
        self._dlq_replicas = dlq_replicas
        self._stopping = asyncio.Event()
        self._pull: OrderedPull | None = None
        self.caught_up = asyncio.Event()
        self.position = 0
        self.target = 0
        self.applied = 0
        self.dead_lettered = 0
        self.dlq_failures = 0
        #: Identity (created time) of the stream the position belongs to ("" until known).
        self.identity = ""
        #: The read model's generation this feed reads for (``ReadModel.rebuild``).
        self.generation = 0
        self._reset = True

    def stop(self) -> None:
        """Finishes the batch in hand, then makes ``run`` return."""
        self._stopping.set()
        if self._pull is not None:
            self._pull.interrupt()

    def status(self) -> str | None:
        """``None`` once caught up, else how far the initial replay is."""
        if self.caught_up.is_set():
            return None
        return f"replaying {self.stream}: {self.position}/{self.target}"

    async def run(self) -> None:
        """Projects until ``stop``; survives NATS outages and restarts, and streams replaced under it."""
        self._store.on_rebuild.append(self._on_rebuild)
        self._reset = True
        retries = RETRY_BACKOFF.start()
        try:
            while not self._stopping.is_set():
                pull: OrderedPull | None = None
                started_at = self.position
                try:
                    if self._reset:
                        await self._resume()
                    if not await self._same_stream():
                        continue  # the read model is being rebuilt: start over
                    pull = OrderedPull(
                        self._nc, self._js, self.stream, batch=self._batch_size, heartbeat=self._heartbeat
                    )
                    await pull.open(self.position + 1)
                    self._pull = pull
                    if self._stopping.is_set():
                        break
                    if self._reset:
                        continue
                    log.info("projecting %s from sequence %d", self.stream, self.position + 1)
                    await self._project(pull)
                except Exception as exc:
                    if self._stopping.is_set():
                        break
                    if self._reset:
                        continue  # a batch of the rebuilt read model's previous generation
                    # The backoff grows while nothing commits (the database down), and starts
                    # over once a batch did.
                    if self.position > started_at:
                        retries.reset()
                    delay = retries.next()
                    if retries.failures == 1 or retries.failures % 30 == 0:
                        if isinstance(exc, NotFoundError):
                            log.info(
                                "stream %s does not exist (yet); projecting it once it does", self.stream
                            )
                        else:
                            log.warning(
                                "projection of %s paused (%r); resuming from its checkpoint", self.stream, exc
                            )
                    await self._pause(delay)
                finally:
                    self._pull = None
                    if pull is not None:
                        await pull.close()
        finally:
            self._store.on_rebuild.remove(self._on_rebuild)

    def _on_rebuild(self) -> None:
        """The read model was emptied (by this feed or another): replay from sequence 1."""
        self._reset = True
        self.caught_up.clear()
        if self._pull is not None:
            self._pull.interrupt()

    async def _resume(self) -> None:
        """Takes the committed checkpoint, and the identity of the stream it belongs to, as the position."""
        self.generation = self._store.generation
        self.position, self.identity = await self._store.position(self.stream)
        self._reset = False
        self.caught_up.clear()

    async def _same_stream(self) -> bool:
        """Checks that the stream is the one the checkpoint belongs to; rebuilds the read model if not.

        Also reads where the stream ends while the feed is catching up: readiness waits until
        the feed gets there.

        Returns:
            ``False`` when a rebuild was started (the feed must resume from the new checkpoint).

        Raises:
            nats.js.errors.NotFoundError: the stream does not exist (yet).
        """
        try:
            info = await self._js.stream_info(self.stream)
        except NotFoundError:
            if not self.caught_up.is_set():
                self.target = self.position  # nothing (more) to catch up with until it exists
                self.caught_up.set()
            raise
        created = info.created.isoformat() if info.created is not None else ""
        last = int(info.state.last_seq)
        replaced = bool(self.identity and created and created != self.identity)
        if self.position > 0 and (replaced or self.position > last):
            # The facts behind the old checkpoint are gone from JetStream; what the read model
            # learned from them is still true and is kept. Only the position starts over: the
            # new stream's facts are projected from its start (a replaced stream) or from its
            # new end (a stream that lost its tail).
            restart = 0 if replaced else last
            log.warning(
                "stream %s %s: projecting it from sequence %d; the read model keeps what it has",
                self.stream,
                f"was replaced (created {created}, not {self.identity})"
                if replaced
                else f"ends at {last} but the read model is at {self.position}",
                restart + 1,
                extra={"stream": self.stream},
            )
            await self._store.write(
                WriteBatch(
                    checkpoints={self.stream: restart}, stream_ids={self.stream: created}, restart=True
                )
            )
            self._reset = True
            return False
        self.identity = self.identity or created
        if not self.caught_up.is_set():
            self.target = last if info.state.messages else 0
            if self.position >= self.target:
                self.caught_up.set()
        return True

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stopping.wait()

    async def _project(self, pull: OrderedPull) -> None:
        """Reads, prepares and commits batches, one commit in flight at a time.

        The next batch is read and prepared while the previous one commits (the
        database works in its own thread meanwhile), which is what makes a replay
        fast; when nothing else is waiting the commit is finished at once, so live
        facts reach the read model (and the watchers) without delay.
        """
        in_flight: _Commit | None = None
        try:
            while not self._stopping.is_set() and not self._reset:
                deliveries = await pull.next_batch(self._batch_size)
                if not deliveries:
                    continue
                batch = await self._prepare(deliveries)
                if in_flight is not None:
                    await self._finish(in_flight)
                in_flight = _Commit(asyncio.ensure_future(self._store.write(batch)), batch, len(deliveries))
                if not pull.buffered:
                    await self._finish(in_flight)
                    in_flight = None
        finally:
            if in_flight is not None:
                # Leave with the position of what is really committed.
                with contextlib.suppress(Exception):
                    await self._finish(in_flight)

    async def _prepare(self, deliveries: list[Delivery]) -> WriteBatch:
        """The batch of writes for ``deliveries``; poison is copied to the DLQ on the way."""
        batch = WriteBatch()
        for msg, sequence, stored_at_us in deliveries:
            fact = read_fact(
                stream=self.stream,
                sequence=sequence,
                subject=msg.subject,
                headers=msg.headers,
                data=msg.data,
                stored_at_us=stored_at_us,
            )
            if fact.trace is not None:
                batch.trace.append(fact.trace)
            if fact.change is not None:
                batch.changes.append(fact.change)
            if fact.error is not None:
                # Stored before the checkpoint moves past it; a repeat is de-duplicated by the DLQ.
                with log_context(correlation_id=fact.trace.correlation_id if fact.trace else None):
                    await self._copy_to_dlq(msg, sequence, fact.error)
                self.dead_lettered += 1
        batch.checkpoints[self.stream] = deliveries[-1].sequence
        batch.stream_ids[self.stream] = self.identity
        batch.generation = self.generation
        return batch

    async def _copy_to_dlq(self, msg: Msg, sequence: int, error: str) -> None:
        """Stores the DLQ copy of a poison fact, however long it takes.

        Raises:
            FeedStopped: ``stop`` came first; the batch must not be committed.
        """
        retries = RETRY_BACKOFF.start()
        while True:
            try:
                await copy_to_dlq(self._js, msg, DLQ_CONSUMER, error)
            except Exception as exc:
                delay = retries.next()
                self.dlq_failures += 1
                if retries.failures == 1 or retries.failures % 30 == 0:
                    log.error(
                        "cannot copy %s sequence %d to the DLQ (%r); its projection waits for the copy",
                        self.stream,
                        sequence,
                        exc,
                        extra={"stream": self.stream, "stream_seq": sequence},
                    )
            else:
                if retries.failures:
                    log.warning("DLQ copy of %s sequence %d stored", self.stream, sequence)
                return
            # The DLQ stream may have been deleted: re-create it the way every service does.
            with contextlib.suppress(Exception):
                await self._unless_stopped(provision_stream(self._js, DLQ, self._dlq_replicas))
            await self._pause(delay)
            if self._stopping.is_set():
                raise FeedStopped(f"stopped before the DLQ copy of {self.stream} {sequence} was stored")

    async def _unless_stopped(self, work: Coroutine[Any, Any, None]) -> None:
        """Runs ``work``, abandoning it when ``stop`` comes first."""
        task = asyncio.ensure_future(work)
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pending in (task, stopping):
                pending.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pending
        if task.done() and not task.cancelled():
            task.result()

    async def _finish(self, commit: _Commit) -> None:
        """Waits for a commit and moves the feed's position past it."""
        await commit.future
        self.position = commit.batch.checkpoints[self.stream]
        self.applied += commit.messages
        if log.isEnabledFor(logging.DEBUG):
            for change in commit.batch.changes:
                log.debug(
                    "booking %s: %s",
                    change.booking_id,
                    change.status,
                    extra={"correlation_id": change.correlation_id, "stream": self.stream},
                )
        if not self.caught_up.is_set() and self.position >= self.target:
            log.info("read model caught up with %s at sequence %d", self.stream, self.position)
            self.caught_up.set()


class FeedStopped(Exception):
    """The feed stopped in the middle of a batch, which is not committed."""


@dataclass(frozen=True, slots=True)
class _Commit:
    future: asyncio.Future[None]
    batch: WriteBatch
    messages: int
