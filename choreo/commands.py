"""Serving commands over NATS request/reply, with group commit.

Requests are queued as they arrive and handed to the handler in batches: all
the requests that arrived while the previous batch was committing go into the
next transaction. Under load this turns one commit per request into one commit
per batch; at low load a batch is a single request, so latency is unchanged.
Replicas subscribe in one queue group, so NATS spreads requests across them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from choreo.bus import flush_subscriptions

log = logging.getLogger(__name__)

#: Handles a batch of requests and returns one reply payload per request, in order.
BatchHandler = Callable[[Sequence[Msg]], Awaitable[Sequence[bytes]]]


class CommandServer:
    """Subscribes to a command subject in a queue group and answers in batches.

    Args:
        nc: NATS connection.
        subject: Command subject, e.g. ``cmd.booking.create``.
        queue: Queue group shared by the service's replicas.
        handler: Turns a batch of requests into replies.
        max_batch: Most requests handled in one batch.
    """

    def __init__(
        self, nc: NATS, subject: str, queue: str, handler: BatchHandler, max_batch: int = 256
    ) -> None:
        self._nc = nc
        self._subject = subject
        self._queue_group = queue
        self._handler = handler
        self._max_batch = max_batch
        self._queue: asyncio.Queue[Msg | None] = asyncio.Queue()
        self._sub: Subscription | None = None
        self._stopping = False
        self.ready = asyncio.Event()

    async def _enqueue(self, msg: Msg) -> None:
        self._queue.put_nowait(msg)

    async def run(self) -> None:
        """Serves until ``stop``; requests already received are still answered."""
        if self._stopping:  # stopped before it started: never take a request
            return
        self._sub = await self._nc.subscribe(self._subject, queue=self._queue_group, cb=self._enqueue)
        await flush_subscriptions(self._nc)
        self.ready.set()
        while True:
            first = await self._queue.get()
            if first is None:
                break
            batch = [first]
            stop_after = False
            while len(batch) < self._max_batch and not self._queue.empty():
                nxt = self._queue.get_nowait()
                if nxt is None:
                    stop_after = True
                    break
                batch.append(nxt)
            await self._serve(batch)
            if stop_after:
                break
        if self._sub is not None:
            # stop() came while we were subscribing, so it could not unsubscribe.
            sub, self._sub = self._sub, None
            await self._drain(sub)

    async def _serve(self, batch: list[Msg]) -> None:
        try:
            replies = await self._handler(batch)
        except Exception:
            log.exception("command batch of %d failed", len(batch))
            return  # requesters time out and may retry with their idempotency key
        for msg, reply in zip(batch, replies, strict=True):
            if msg.reply:
                try:
                    await self._nc.publish(msg.reply, reply)
                except Exception as exc:
                    log.warning("could not reply to %s: %r", msg.reply, exc)

    def stop(self) -> None:
        """Stops taking requests; other replicas of the queue group get them from now on."""
        self._stopping = True
        if self._sub is not None:
            sub, self._sub = self._sub, None
            task = asyncio.ensure_future(self._drain(sub))
            task.add_done_callback(lambda _t: self._queue.put_nowait(None))
        else:
            self._queue.put_nowait(None)

    async def _drain(self, sub: Subscription) -> None:
        try:
            await sub.drain()  # type: ignore[no-untyped-call]
        except Exception as exc:
            log.debug("drain of %s failed: %r", self._subject, exc)
