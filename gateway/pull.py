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
import json
import logging
import uuid
from typing import NamedTuple

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

log = logging.getLogger(__name__)

_STATUS = "Status"
_DESCRIPTION = "Description"
_PENDING_MESSAGES = "Nats-Pending-Messages"


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

    Args:
        nc: NATS connection.
        js: JetStream context (creates and deletes the consumer).
        stream: Stream to read (every subject).
        batch: Messages per pull request; at most about twice this is in flight.
        heartbeat: Idle heartbeat the server sends while a pull waits; three
            missed in a row mean the consumer or the server is gone.
        expires: Lifetime of one pull request.
        api_prefix: JetStream API prefix (``$JS.API`` unless a domain is used).
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
        api_prefix: str = "$JS.API",
    ) -> None:
        self._nc = nc
        self._js = js
        self.stream = stream
        self._batch = batch
        self._heartbeat = heartbeat
        self._expires = max(expires, heartbeat * 4)
        self._api_prefix = api_prefix
        self.consumer = ""
        self._sub: Subscription | None = None
        self._buffer: list[Delivery] = []
        self._arrived = asyncio.Event()
        self._credit = 0
        self._expected = 1
        self._last_activity = 0.0
        self._problem: str | None = None
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
        self._sub = await self._nc.subscribe(self._nc.new_inbox(), cb=self._on_message)
        self._last_activity = asyncio.get_running_loop().time()
        await self._request()

    async def next_batch(self, limit: int) -> list[Delivery]:
        """Waits for messages and returns up to ``limit`` of them, in order.

        Returns an empty list when ``interrupt`` was called.

        Raises:
            PullInterrupted: the consumer lost its place (re-open from the checkpoint).
        """
        loop = asyncio.get_running_loop()
        stall_after = self._heartbeat * 3 + 0.5
        while True:
            if self._problem is not None:
                raise PullInterrupted(self._problem)
            if self._buffer:
                taken, self._buffer = self._buffer[:limit], self._buffer[limit:]
                if self._credit <= self._batch and len(self._buffer) < self._batch * 2:
                    await self._request()
                return taken
            if self._interrupted:
                return []
            self._arrived.clear()
            if self._credit <= 0:
                await self._request()
            remaining = stall_after - (loop.time() - self._last_activity)
            if remaining <= 0:
                raise PullInterrupted(f"no message or heartbeat from {self.stream} for {stall_after:.1f}s")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._arrived.wait()

    @property
    def buffered(self) -> int:
        """Messages received and not yet taken."""
        return len(self._buffer)

    def interrupt(self) -> None:
        """Makes a waiting ``next_batch`` return (used on shutdown)."""
        self._interrupted = True
        self._arrived.set()

    async def close(self) -> None:
        """Stops reading and deletes the consumer (best effort: it expires on its own)."""
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None
        if self.consumer and self._nc.is_connected:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await self._js.delete_consumer(self.stream, self.consumer)

    async def _request(self) -> None:
        if self._sub is None:
            return
        request = {
            "batch": self._batch,
            "expires": int(self._expires * 1e9),
            "idle_heartbeat": int(self._heartbeat * 1e9),
        }
        subject = f"{self._api_prefix}.CONSUMER.MSG.NEXT.{self.stream}.{self.consumer}"
        await self._nc.publish(subject, json.dumps(request).encode(), reply=self._sub.subject)
        self._credit += self._batch

    async def _on_message(self, msg: Msg) -> None:
        self._last_activity = asyncio.get_running_loop().time()
        headers = msg.headers
        status = headers.get(_STATUS) if headers else None
        if status:
            self._on_status(status, headers or {})
        else:
            position = parse_reply(msg.reply) if msg.reply else None
            if position is None:
                self._problem = f"a message without JetStream metadata (reply {msg.reply!r})"
            elif position[1] != self._expected:
                # A message was lost on the way (slow consumer, reconnect): start over from the checkpoint.
                self._problem = f"consumer sequence {position[1]}, expected {self._expected}"
            else:
                self._expected += 1
                self._credit -= 1
                self._buffer.append(Delivery(msg, position[0], position[2] // 1000))
        self._arrived.set()

    def _on_status(self, status: str, headers: dict[str, str]) -> None:
        if status == "100":
            return  # idle heartbeat: the consumer is alive
        description = headers.get(_DESCRIPTION, "")
        pending = headers.get(_PENDING_MESSAGES)
        if status in ("404", "408") or (status == "409" and pending is not None):
            # A pull request ended (expired, or the leader changed); its unused credit is gone.
            self._credit -= int(pending) if pending else self._batch
            self._credit = max(self._credit, 0)
            return
        self._problem = f"status {status} {description}".strip()
