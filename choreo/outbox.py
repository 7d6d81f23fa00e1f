"""Transactional outbox: facts are written with the state change, published after.

A handler never publishes to NATS directly. Its outgoing events are inserted
into ``outbox`` in the same transaction as its writes, so a fact is published if
and only if the state change committed. The relay publishes them in id order,
pipelined, with ``Nats-Msg-Id`` = event id (JetStream drops a re-publish after a
crash between publish and delete), then deletes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Sequence
from typing import Any

from nats.js import JetStreamContext
from nats.js.errors import APIError, NoStreamResponseError
from sqlalchemy import Column, LargeBinary, Text, bindparam, delete, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlmodel import Field, SQLModel

from choreo.db import BigIntId, big_int, now_us, read_only
from choreo.envelope import Envelope
from choreo.metrics import Stages

log = logging.getLogger(__name__)

#: Publish errors that are answers from a reachable JetStream, not an outage.
_REFUSALS = (NoStreamResponseError, APIError)


class OutboxRow(SQLModel, table=True):
    """A fact waiting to be published."""

    __tablename__ = "outbox"

    id: int | None = Field(default=None, sa_column=Column(BigIntId, primary_key=True, autoincrement=True))
    event_id: str = Field(max_length=64)
    subject: str = Field(max_length=255)
    headers: str = Field(sa_column=Column(Text, nullable=False))
    payload: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at_us: int = big_int()


outbox_table = OutboxRow.__table__  # type: ignore[attr-defined]

# Built once: constructing a statement (and its cache key) per round costs more than running it.
_INSERT = insert(outbox_table)
_OLDEST = (
    select(
        outbox_table.c.id,
        outbox_table.c.event_id,
        outbox_table.c.subject,
        outbox_table.c.headers,
        outbox_table.c.payload,
        outbox_table.c.created_at_us,
    )
    .order_by(outbox_table.c.id)
    .limit(bindparam("limit"))
)
_DELETE = delete(outbox_table).where(outbox_table.c.id.in_(bindparam("ids", expanding=True)))


async def add_to_outbox(conn: AsyncConnection, envelopes: Sequence[Envelope]) -> None:
    """Queues events for publishing inside the caller's transaction."""
    if not envelopes:
        return
    now = now_us()
    await conn.execute(
        _INSERT,
        [
            {
                "event_id": e.id,
                "subject": e.subject,
                "headers": json.dumps(e.headers()),
                "payload": e.data,
                "created_at_us": now,
            }
            for e in envelopes
        ],
    )


class OutboxRelay:
    """Publishes the outbox to JetStream right after each commit, and by polling.

    Args:
        engine: The service's database.
        js: JetStream context to publish with.
        batch_size: Rows published (pipelined) per round.
        poll_interval: Seconds between polls when nobody calls ``notify`` - the
            fallback that catches rows left by a crash or a NATS outage.
        publish_timeout: Seconds to wait for JetStream's acknowledgements.
        stages: Where to add each fact's ``outbox_lag`` (``choreo.metrics``).
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
    ) -> None:
        self._engine = engine
        self._js = js
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._publish_timeout = publish_timeout
        self._stages = stages
        self._wake = asyncio.Event()
        self._stopping = False
        #: Called with (event_id, created_at_us) after JetStream acknowledged it.
        self.on_published: list[Any] = []

    def notify(self) -> None:
        """Tells the relay that a transaction with outbox rows just committed."""
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        """Runs until ``stop``; drains what is left before returning."""
        failures = 0
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll_interval)
            self._wake.clear()
            try:
                while await self.publish_pending():
                    pass
                failures = 0
            except Exception as exc:  # NATS or database down: keep the rows, retry later
                failures += 1
                delay = min(self._poll_interval * 2**failures, 10.0)
                log.warning("outbox publish failed, retrying in %.1fs: %r", delay, exc)
                if self._stopping:
                    return
                await asyncio.sleep(delay)
                continue
            if self._stopping:
                return

    async def publish_pending(self) -> int:
        """Publishes one batch; returns how many rows were published."""
        async with read_only(self._engine) as conn:
            rows = (await conn.execute(_OLDEST, {"limit": self._batch_size})).all()
            await conn.rollback()
        if not rows:
            return 0
        # Pipelined: every publish is on the wire before the first ack is awaited.
        futures = [
            await self._js.publish_async(row.subject, row.payload, headers=json.loads(row.headers))
            for row in rows
        ]
        results = await asyncio.wait_for(
            asyncio.gather(*futures, return_exceptions=True), self._publish_timeout
        )
        done = [row for row, res in zip(rows, results, strict=True) if not isinstance(res, BaseException)]
        if done and self._stages is not None:
            acked_us = now_us()
            self._stages.observe("outbox_lag", sum(acked_us - r.created_at_us for r in done) / 1e6, len(done))
        if done:
            async with self._engine.begin() as conn:
                await conn.execute(_DELETE, {"ids": [r.id for r in done]})
            for callback in self.on_published:
                for row in done:
                    callback(row.event_id, row.created_at_us)
        failed = [res for res in results if isinstance(res, BaseException)]
        # JetStream answered "no" (no stream for the subject, an API error): NATS is up,
        # so backing off would only delay every later fact. Such rows stay, and are
        # retried and reported each round, without slowing the others down.
        refused = [(row, res) for row, res in zip(rows, results, strict=True) if isinstance(res, _REFUSALS)]
        for row, res in refused:
            log.error(
                "JetStream refused outbox row %d (%s on %s): %r; it stays in the outbox",
                row.id,
                row.event_id,
                row.subject,
                res,
            )
        if len(failed) > len(refused):
            raise RuntimeError(f"{len(failed)} of {len(rows)} publishes failed: {failed[0]!r}")
        return len(done)
