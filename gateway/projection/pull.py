"""An ordered, ack-less reader of one stream, resumable from any sequence.

The read model keeps its own position (the checkpoint, committed with the
data), so it needs no durable consumer and no acks: it reads the stream from
``checkpoint + 1`` through an ephemeral pull consumer with ``AckPolicy.NONE``
and keeps pull requests outstanding, like nats.go's ordered ``Consume``.

Why not nats-py's push ``ordered_consumer``: its position is the last
*delivered* message, kept inside the client, and it re-creates consumers in
background tasks that report failures only to the error callback. Here the
position is always the last *committed* message, and every anomaly (a
consumer sequence gap, a deleted consumer, a server restart that lost the
consumer, missing heartbeats) surfaces as one exception, after which the
caller simply re-opens from its checkpoint. Pull requests also give
backpressure: more messages are requested only as the caller takes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import NamedTuple

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from choreo.pull import PullReader, PullStalled

log = logging.getLogger(__name__)


class Delivery(NamedTuple):
    """A message with its place in the stream."""

    msg: Msg
    #: Stream sequence.
    sequence: int
    #: When JetStream stored it (microseconds since the epoch).
    stored_at_us: int


def parse_reply(reply: str) -> tuple[int, int, int] | None:
    """(stream sequence, consumer sequence, stored-at ns) from a JetStream message's reply subject.

    ``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ns>.<pending>``, or the
    newer form with ``<domain>.<account hash>`` after ``ACK`` (and a trailing token).
    Parsed here once per message, far cheaper than ``Msg.metadata``.
    """
    tokens = reply.split(".")
    if len(tokens) < 9 or tokens[0] != "$JS" or tokens[1] != "ACK":
        return None
    base = 5 if len(tokens) == 9 else 7
    try:
        return int(tokens[base]), int(tokens[base + 1]), int(tokens[base + 2])
    except (ValueError, IndexError):
        return None


class PullInterrupted(Exception):
    """The reader lost its place; re-open it from the last committed sequence."""


class OrderedPull:
    """Reads ``stream`` in sequence order without acknowledgements.

    The pulling itself (outstanding requests, heartbeats, status messages) is
    ``choreo.pull.PullReader``'s; this adds the ephemeral consumer and the
    check that no message was skipped.

    Args:
        nc: NATS connection.
        js: JetStream context (creates and deletes the consumer).
        stream: Stream to read (every subject).
        batch: Messages per pull request; at most about twice this is in flight.
        heartbeat: Idle heartbeat the server sends while a pull waits; three
            missed in a row mean the consumer or the server is gone.
        expires: Lifetime of one pull request.
    """

    def __init__(
        self,
        nc: NATS,
        js: JetStreamContext,
        stream: str,
        *,
        batch: int = 1000,
        heartbeat: float = 1.0,
        expires: float = 30.0,
    ) -> None:
        self._nc = nc
        self._js = js
        self.stream = stream
        self._batch = batch
        self._heartbeat = heartbeat
        self._expires = max(expires, heartbeat * 4)
        self.consumer = ""
        self._reader: PullReader | None = None
        self._expected = 1
        self._interrupted = False

    async def open(self, start_sequence: int) -> None:
        """Creates the consumer at ``start_sequence`` and starts pulling.

        Raises:
            nats.js.errors.NotFoundError: the stream does not exist (yet).
            Exception: NATS is not reachable.
        """
        self.consumer = f"gateway-{uuid.uuid4().hex[:16]}"
        config = ConsumerConfig(
            name=self.consumer,
            description="gateway read model (ordered, no acks)",
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=max(1, start_sequence),
            ack_policy=AckPolicy.NONE,
            max_deliver=1,
            # Nothing to recover: the checkpoint is ours. Memory, one replica, cleaned up when idle.
            mem_storage=True,
            num_replicas=1,
            inactive_threshold=max(30.0, self._expires * 2),
        )
        await self._js.add_consumer(self.stream, config)
        self._reader = PullReader(
            self._nc,
            self.stream,
            self.consumer,
            batch=self._batch,
            heartbeat=self._heartbeat,
            expires=self._expires,
        )
        if self._interrupted:
            self._reader.interrupt()
        await self._reader.start()

    async def next_batch(self, limit: int) -> list[Delivery]:
        """Waits for messages and returns up to ``limit`` of them, in order.

        Returns an empty list when ``interrupt`` was called.

        Raises:
            PullInterrupted: the consumer lost its place (re-open from the checkpoint).
        """
        if self._reader is None:
            raise PullInterrupted("not open")
        try:
            msgs = await self._reader.next_batch(limit)
        except PullStalled as exc:
            raise PullInterrupted(str(exc)) from exc
        deliveries = []
        for msg in msgs:
            position = parse_reply(msg.reply) if msg.reply else None
            if position is None:
                raise PullInterrupted(f"a message without JetStream metadata (reply {msg.reply!r})")
            if position[1] != self._expected:
                # A message was lost on the way (slow consumer, reconnect): start over from the checkpoint.
                raise PullInterrupted(f"consumer sequence {position[1]}, expected {self._expected}")
            self._expected += 1
            deliveries.append(Delivery(msg, position[0], position[2] // 1000))
        return deliveries

    @property
    def buffered(self) -> int:
        """Messages received and not yet taken."""
        return self._reader.buffered if self._reader is not None else 0

    def interrupt(self) -> None:
        """Makes a waiting ``next_batch`` return (used on shutdown)."""
        self._interrupted = True
        if self._reader is not None:
            self._reader.interrupt()

    async def close(self) -> None:
        """Stops reading and deletes the consumer (best effort: it expires on its own)."""
        if self._reader is not None:
            await self._reader.stop()
        if self.consumer and self._nc.is_connected:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await self._js.delete_consumer(self.stream, self.consumer)
