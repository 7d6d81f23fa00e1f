"""Transactional outbox: facts are written with the state change, published after.

A handler never publishes to NATS directly. Its outgoing events are inserted
into ``outbox`` (``choreo.outbox_store``) in the same transaction as its
writes, so a fact is published if and only if the state change committed. The
relay claims a batch of rows, publishes them pipelined with ``Nats-Msg-Id`` =
event id (JetStream drops a re-publish after a crash between publish and
delete), and then settles each row on its own outcome:

- acknowledged: deleted;
- refused for good (larger than the server's ``max_payload`` or the stream's
  ``max_msg_size``, an invalid subject or header, or "no stream" again after
  the relay re-provisioned its stream): *parked*, logged, counted in
  ``choreo_outbox_parked_rows``; ``choreo outbox`` lists, re-queues or discards it;
- "no stream" (the stream was deleted or JetStream lost its data): the relay
  re-provisions its stream through ``provision`` and publishes the row again;
- refused because the stream is full (its ``max_bytes``, see ``choreo.bus``, or
  the server's storage): kept and retried with backoff like a transient failure,
  never dropped; the relay raises an alert: one ERROR line per episode naming the
  stream, ``choreo_outbox_publish_refused_total{stream=...}`` counts the refusals
  and ``choreo_outbox_oldest_unpublished_seconds`` shows how long facts have
  waited (alert rules: docs/alerts.md). Once the limit is raised (or space freed)
  the facts are published, each workflow's in order;
- anything else (a timeout, a lost connection): the row is retried with backoff.

A parked or retried row holds back only the later facts of its own workflow
(see ``choreo.outbox_store``). ``check`` reports rows that cannot be published
for now, for the service's readiness.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from nats.errors import BadHeaderError, BadSubjectError, MaxPayloadError
from nats.js import JetStreamContext
from nats.js.api import PubAck
from nats.js.errors import APIError, NoStreamResponseError
from sqlalchemy.ext.asyncio import AsyncEngine

from choreo.db import now_us, read_only
from choreo.jspublish import frame_size, max_payload, publish_async
from choreo.metrics import Stages
from choreo.outbox_store import (
    OutboxRow,
    Pending,
    add_to_outbox,
    anything_to_claim,
    claim,
    oldest_unpublished_us,
    outbox_table,
    parked_count,
    release_all_claims,
    settle,
)
from choreo.retry import Backoff

__all__ = ["OutboxRelay", "OutboxRow", "add_to_outbox", "outbox_table"]

log = logging.getLogger(__name__)

#: Publish errors raised before anything was sent that no retry can change.
_UNSENDABLE = (MaxPayloadError, BadSubjectError, BadHeaderError)
#: JetStream's refusals that no retry can change: 10054 "message size exceeds maximum allowed".
_PERMANENT_API_CODES = frozenset({10054})
#: JetStream's refusals of a stream (or server) with no room: 10077 "maximum bytes exceeded" (or
#: messages) of a ``discard=new`` stream, 10047 / 10023 insufficient storage resources.
_FULL_API_CODES = frozenset({10077, 10047, 10023})

PARKED_GAUGE = "outbox_parked_rows"
OLDEST_GAUGE = "outbox_oldest_unpublished_seconds"
REFUSED_COUNTER = "outbox_publish_refused_total"


@dataclass
class _Round:
    """What became of each claimed row in one round."""

    published: list[Pending] = field(default_factory=list)
    parked: dict[int, str] = field(default_factory=dict)
    no_stream: list[Pending] = field(default_factory=list)
    retry: list[Pending] = field(default_factory=list)
    #: A failure that may pass: the round backs off.
    error: BaseException | None = None
    #: Rows wait for a stream nobody re-provisions (no backoff: other facts go on).
    unresolved: str | None = None
    #: Stream -> (rows it refused for want of room, JetStream's reason).
    full: dict[str, tuple[int, str]] = field(default_factory=dict)


class OutboxRelay:
    """Publishes the outbox to JetStream right after each commit, and by polling.

    Args:
        engine: The service's database.
        js: JetStream context to publish with; the relay must be its only
            ``publish_async`` user (``choreo.jspublish``).
        batch_size: Rows claimed and published (pipelined) per round.
        poll_interval: Seconds between polls when nobody calls ``notify`` - the
            fallback that catches rows left by a crash or a NATS outage.
        publish_timeout: Seconds to wait for JetStream's acknowledgements.
        stages: Where to add each fact's ``outbox_lag`` and the parked-rows gauge.
        provision: Re-creates the service's stream; called when JetStream says
            no stream captures a row's subject.
        lease_seconds: How long a claim lasts: rows claimed by a relay that died
            are published by another one after this (default: 2 x ``publish_timeout``, at
            least 10 s). A round that outlives its lease is harmless: the other relay's
            re-publish carries the same ``Nats-Msg-Id`` and JetStream drops it. On SQLite (one
            process per database file) a starting relay frees every claim at once.
        stream_of: The stream of a subject, for the alerts of a full stream (the service's
            ``Topology.stream_of``); by default the subject stands for its stream.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        js: JetStreamContext,
        *,
        batch_size: int = 500,
        poll_interval: float = 1.0,
        publish_timeout: float = 5.0,
        stages: Stages | None = None,
        provision: Callable[[], Awaitable[None]] | None = None,
        lease_seconds: float | None = None,
        stream_of: Callable[[str], str] = str,
    ) -> None:
        self._engine = engine
        self._stream_of = stream_of
        self._js = js
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._publish_timeout = publish_timeout
        self._stages = stages
        self._provision = provision
        self._lease = lease_seconds if lease_seconds is not None else max(10.0, 2 * publish_timeout)
        self._wake = asyncio.Event()
        self._stopping = False
        self._again = False
        #: Rows refused with "no stream" after which the stream was re-provisioned.
        self._provisioned_for: set[int] = set()
        #: Why rows cannot be published right now (None: they can).
        self.problem: str | None = None
        #: Parked rows in the database, as last counted.
        self.parked_rows = 0
        #: Streams refusing facts for want of room, with the reason (an episode is alerted once).
        self.full_streams: dict[str, str] = {}
        #: Outcomes of a round whose settling transaction failed (the database blinked): settled
        #: first next round, so this relay's own claims never wait for their lease to expire.
        self._unsettled: list[dict[str, Any]] = []

    def notify(self) -> None:
        """Tells the relay that a transaction with outbox rows just committed."""
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def check(self) -> str | None:
        """A health check: the reason facts cannot be published now, or None."""
        return self.problem

    async def run(self) -> None:
        """Runs until ``stop``; drains what is left before returning."""
        # Twice the poll interval after the first failed round, doubling up to 10 s.
        retries = Backoff(2 * self._poll_interval, 10.0).start()
        with contextlib.suppress(Exception):  # the database may be down at start; counted later
            await self.count_parked()
        if self._engine.dialect.name == "sqlite":
            # The only relay of this file: the claims of its killed predecessor are its own.
            with contextlib.suppress(Exception):
                async with self._engine.begin() as conn:
                    await release_all_claims(conn)
        while True:
            polled = False
            try:
                await asyncio.wait_for(self._wake.wait(), self._poll_interval)
            except TimeoutError:
                polled = True
            self._wake.clear()
            try:
                if polled:
                    await self.count_parked()  # the operator may have re-queued or discarded rows
                while await self.publish_pending() or self._again:
                    self._again = False
                retries.reset()
                if polled or self._oldest_seen:
                    await self.measure_oldest()
            except Exception as exc:  # NATS or database down: keep the rows, retry later
                delay = retries.next()
                with contextlib.suppress(Exception):
                    await self.measure_oldest()
                self.problem = self.problem or f"outbox publish failing: {exc!r}"
                log.warning("outbox publish failed, retrying in %.1fs: %r", delay, exc)
                if self._stopping:
                    return
                await asyncio.sleep(delay)
                continue
            if self._stopping:
                return

    async def count_parked(self) -> int:
        """Counts the parked rows into ``parked_rows`` and the gauge."""
        async with read_only(self._engine) as conn:
            self.parked_rows = await parked_count(conn)
            await conn.rollback()
        if self._stages is not None:
            self._stages.set_gauge(PARKED_GAUGE, self.parked_rows, "Outbox rows parked as unpublishable.")
        return self.parked_rows

    @property
    def _oldest_seen(self) -> bool:
        return bool(self._stages is not None and self._stages.gauge(OLDEST_GAUGE))

    async def measure_oldest(self) -> float:
        """Sets the gauge of the oldest unpublished fact's age (0 when nothing waits); returns it."""
        async with read_only(self._engine) as conn:
            oldest = await oldest_unpublished_us(conn)
            await conn.rollback()
        age = 0.0 if oldest is None else max(0.0, (now_us() - oldest) / 1e6)
        if self._stages is not None:
            self._stages.set_gauge(OLDEST_GAUGE, age, "Age of the oldest outbox fact not yet published.")
        return age

    async def publish_pending(self) -> int:
        """Claims and publishes one batch; returns how many rows were published.

        Raises:
            Exception: Some rows met a failure that may pass (they stay, unclaimed).
        """
        while self._unsettled:
            async with self._engine.begin() as conn:
                await settle(conn, **self._unsettled[0])
            self._unsettled.pop(0)
        async with read_only(self._engine) as conn:
            found = await anything_to_claim(conn)
            await conn.rollback()
        rows = []
        if found:
            async with self._engine.begin() as conn:
                rows = await claim(conn, self._batch_size, self._lease)
        if not rows:
            self.problem = None
            return 0
        outcome = await self._publish(rows)
        retry = outcome.retry + await self._handle_no_stream(outcome)
        settling: dict[str, Any] = {
            "published": [r.id for r in outcome.published],
            "parked": outcome.parked,
            "released": [r.id for r in retry],
        }
        try:
            async with self._engine.begin() as conn:
                await settle(conn, **settling)
        except Exception:
            self._unsettled.append(settling)
            raise
        self._report(rows, outcome)
        self._alert_full(outcome)
        if outcome.parked:
            await self.count_parked()
        if outcome.error is not None:
            self.problem = f"{len(retry)} outbox row(s) not published: {outcome.error!r}"
            raise RuntimeError(self.problem) from outcome.error
        self.problem = outcome.unresolved
        return len(outcome.published)

    async def _publish(self, rows: list[Pending]) -> _Round:
        outcome = _Round()
        limit = max_payload(self._js)
        futures: dict[asyncio.Future[PubAck], Pending] = {}
        # Pipelined: every publish is on the wire before the first ack is awaited.
        for i, row in enumerate(rows):
            size = frame_size(row.headers, row.payload)
            if size > limit:
                outcome.parked[row.id] = f"message of {size} bytes exceeds the server's max_payload ({limit})"
                continue
            try:
                futures[await publish_async(self._js, row.subject, row.payload, row.headers, futures)] = row
            except _UNSENDABLE as exc:
                outcome.parked[row.id] = f"cannot be sent: {exc!r}"
            except Exception as exc:  # connection closed, reconnect buffer full: try the rest later
                outcome.retry.extend(rows[i:])
                outcome.error = exc
                break
        if not futures:
            return outcome
        done, pending = await asyncio.wait(futures, timeout=self._publish_timeout)
        for future in pending:
            future.cancel()  # releases its permit; the row is retried (a late ack is de-duplicated)
            outcome.retry.append(futures[future])
            outcome.error = outcome.error or TimeoutError(f"no ack within {self._publish_timeout}s")
        for future in done:
            self._judge(futures[future], future, outcome)
        outcome.retry.sort(key=lambda r: r.id)
        return outcome

    def _judge(self, row: Pending, future: asyncio.Future[PubAck], outcome: _Round) -> None:
        exc = future.exception()
        if exc is None:
            outcome.published.append(row)
        elif isinstance(exc, NoStreamResponseError):
            outcome.no_stream.append(row)
        elif isinstance(exc, APIError) and exc.err_code in _PERMANENT_API_CODES:
            outcome.parked[row.id] = f"refused by JetStream: {exc}"
        elif isinstance(exc, APIError) and exc.err_code in _FULL_API_CODES:
            stream = self._stream_of(row.subject)
            refused, _ = outcome.full.get(stream, (0, ""))
            outcome.full[stream] = (refused + 1, exc.description or repr(exc))
            outcome.retry.append(row)
            outcome.error = outcome.error or exc
        else:
            outcome.retry.append(row)
            outcome.error = outcome.error or exc

    async def _handle_no_stream(self, outcome: _Round) -> list[Pending]:
        """Parks rows refused again after a re-provisioning; re-provisions for the others.

        Returns the rows to retry.
        """
        retry = []
        for row in outcome.no_stream:
            if row.id in self._provisioned_for:
                outcome.parked[row.id] = f"no stream captures {row.subject}, even after re-provisioning"
            else:
                retry.append(row)
        if not retry:
            return []
        subjects = ", ".join(sorted({r.subject for r in retry}))
        if self._provision is None:
            outcome.unresolved = f"JetStream has no stream for {subjects}"
            log.error("%s; %d outbox row(s) wait for it", outcome.unresolved, len(retry))
            return retry
        log.warning("JetStream has no stream for %s: re-provisioning", subjects)
        try:
            await self._provision()
        except Exception as exc:
            outcome.error = outcome.error or exc
            return retry
        self._provisioned_for.update(r.id for r in retry)
        self._again = True  # publish them again at once
        return retry

    def _alert_full(self, outcome: _Round) -> None:
        """Counts refusals by full streams; logs an episode's start (ERROR) and end once each."""
        for stream, (refused, reason) in outcome.full.items():
            if self._stages is not None:
                self._stages.count(
                    REFUSED_COUNTER,
                    "Facts a full stream refused (kept in the outbox).",
                    refused,
                    stream=stream,
                )
            if stream not in self.full_streams:
                self.full_streams[stream] = reason
                log.error(
                    "stream %s is full (%s): it refuses new facts; the outbox keeps them and retries. "
                    "Raise its <PREFIX>_STREAM_MAX_BYTES (or free JetStream storage) and they are published",
                    stream,
                    reason,
                    extra={"stream": stream},
                )
        for stream in {self._stream_of(r.subject) for r in outcome.published} - set(outcome.full):
            if self.full_streams.pop(stream, None) is not None:
                log.warning(
                    "stream %s accepts facts again; the outbox catches up", stream, extra={"stream": stream}
                )

    def _report(self, rows: list[Pending], outcome: _Round) -> None:
        for row_id in outcome.parked:
            self._provisioned_for.discard(row_id)
        by_id = {r.id: r for r in rows}
        for row_id, reason in outcome.parked.items():
            row = by_id[row_id]
            log.error(
                "outbox row %d (%s on %s) parked: %s; later facts of its workflow wait for "
                "`choreo outbox retry %d` or `choreo outbox discard %d`",
                row.id,
                row.event_id,
                row.subject,
                reason,
                row.id,
                row.id,
                extra={"event_id": row.event_id},
            )
        done = outcome.published
        if not done:
            return
        for row in done:
            self._provisioned_for.discard(row.id)
        acked_us = now_us()
        if self._stages is not None:
            self._stages.observe("outbox_lag", sum(acked_us - r.created_at_us for r in done) / 1e6, len(done))
