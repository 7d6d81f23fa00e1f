"""Streaming pull: keep pull requests outstanding, hand out what has arrived.

nats-py's ``fetch(batch, timeout)`` waits for the whole batch or the timeout
once a pull is lingering, so at low load every hop of a workflow would cost up
to ``timeout``. This reader (like ``Consume`` in the newer NATS clients) keeps
requests for about two batches outstanding, buffers deliveries as they come,
and returns as soon as anything is there: low latency when idle, full batches
under load, and the next batch already on its way while one is being handled.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

log = logging.getLogger(__name__)

_STATUS = "Status"
_DESCRIPTION = "Description"
_PENDING_MESSAGES = "Nats-Pending-Messages"


class PullStalled(Exception):
    """No message or heartbeat for a while: the consumer or the server is gone."""


class PullReader:
    """Reads a JetStream consumer through outstanding pull requests.

    Args:
        nc: NATS connection.
        stream: The consumer's stream.
        consumer: Consumer name (durable or ephemeral); it must exist.
        batch: Messages per pull request.
        heartbeat: Idle heartbeat asked of the server; three missed mean a stall.
        expires: Lifetime of one pull request.
    """

    def __init__(
        self,
        nc: NATS,
        stream: str,
        consumer: str,
        *,
        batch: int = 256,
        heartbeat: float = 1.0,
        expires: float = 30.0,
    ) -> None:
        self._nc = nc
        self._subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._batch = batch
        self._heartbeat = heartbeat
        self._expires = max(expires, heartbeat * 4)
        self._sub: Subscription | None = None
        self._buffer: list[Msg] = []
        self._arrived = asyncio.Event()
        self._credit = 0
        self._last_activity = 0.0
        self._problem: str | None = None
        self._interrupted = False

    async def start(self) -> list[Msg]:
        """Subscribes to a fresh inbox and sends the first pull request.

        Returns:
            Messages buffered by the previous subscription and never handed out;
            the caller should nak them so they are redelivered at once.
        """
        leftover = await self.stop()
        self._credit, self._problem = 0, None
        self._sub = await self._nc.subscribe(self._nc.new_inbox(), cb=self._on_message)
        self._last_activity = asyncio.get_running_loop().time()
        await self._request()
        return leftover

    async def next_batch(self, limit: int) -> list[Msg]:
        """Waits for at least one message; returns up to ``limit``.

        Returns an empty list once ``interrupt`` was called.

        Raises:
            PullStalled: nothing (not even a heartbeat) arrived for three heartbeats,
                or the server ended the pull with an error; call ``start`` again.
        """
        loop = asyncio.get_running_loop()
        stall_after = self._heartbeat * 3 + 0.5
        while True:
            if self._interrupted:
                return []
            if self._problem is not None:
                raise PullStalled(self._problem)
            if self._buffer:
                taken, self._buffer = self._buffer[:limit], self._buffer[limit:]
                # Top up while about a batch is in flight, unless the caller is already behind.
                if self._credit <= self._batch and len(self._buffer) < self._batch * 2:
                    await self._request()
                return taken
            self._arrived.clear()
            if self._credit <= 0:
                await self._request()
            remaining = stall_after - (loop.time() - self._last_activity)
            if remaining <= 0:
                raise PullStalled(f"nothing from {self._subject} for {stall_after:.1f}s")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._arrived.wait()

    @property
    def buffered(self) -> int:
        """Messages received and not yet handed out."""
        return len(self._buffer)

    def waiting(self) -> list[Msg]:
        """The messages received and not yet handed out (to keep them alive)."""
        return list(self._buffer)

    def interrupt(self) -> None:
        """Makes a waiting ``next_batch`` return an empty list (shutdown)."""
        self._interrupted = True
        self._arrived.set()

    async def stop(self) -> list[Msg]:
        """Unsubscribes; outstanding requests expire on the server.

        Returns:
            Messages received but never handed out (nak them, or another
            replica only gets them after the ack wait).
        """
        if self._sub is not None:
            sub, self._sub = self._sub, None
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        leftover, self._buffer = self._buffer, []
        return leftover

    async def _request(self) -> None:
        if self._sub is None or not self._nc.is_connected:
            return
        request = {
            "batch": self._batch,
            "expires": int(self._expires * 1e9),
            "idle_heartbeat": int(self._heartbeat * 1e9),
        }
        await self._nc.publish(self._subject, json.dumps(request).encode(), reply=self._sub.subject)
        self._credit += self._batch

    async def _on_message(self, msg: Msg) -> None:
        self._last_activity = asyncio.get_running_loop().time()
        headers = msg.headers
        status = headers.get(_STATUS) if headers else None
        if not status:
            self._credit -= 1
            self._buffer.append(msg)
        elif status != "100":  # 100 is an idle heartbeat: the consumer is alive
            pending = (headers or {}).get(_PENDING_MESSAGES)
            if status in ("404", "408") or (status == "409" and pending is not None):
                # A pull request ended (expired, or leadership moved); its unused credit is gone.
                self._credit = max(0, self._credit - (int(pending) if pending else self._batch))
            else:
                self._problem = f"status {status} {(headers or {}).get(_DESCRIPTION, '')}".strip()
        self._arrived.set()
