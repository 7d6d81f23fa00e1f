"""Keeping messages alive while they are worked on (JetStream's ``+WPI``, "work in progress").

A fact whose handling takes longer than the consumer's ack wait (a slow
provider call, a batch waiting for the database) would be redelivered while it
is still running: to this replica or another, which then runs it a second time.
While a block runs, every message in it is told "in progress" a few times per
ack wait, which restarts the server's ack timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from nats.aio.msg import Msg

log = logging.getLogger(__name__)


@asynccontextmanager
async def keep_alive(msgs: Sequence[Msg], ack_wait: float) -> AsyncIterator[None]:
    """Sends ``in_progress`` for each message not yet acknowledged, every third of ``ack_wait``."""
    every = max(0.05, ack_wait / 3)

    async def tick() -> None:
        while True:
            await asyncio.sleep(every)
            for msg in msgs:
                if not msg._ackd:
                    try:
                        await msg.in_progress()
                    except Exception as exc:  # NATS down: the server redelivers after ack_wait
                        log.debug("in_progress failed: %r", exc)
                        break

    task = asyncio.create_task(tick())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
