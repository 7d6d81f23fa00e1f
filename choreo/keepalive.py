"""Keeping messages alive while they wait or are worked on (JetStream's ``+WPI``, "work in progress").

A fact whose handling takes longer than the consumer's ack wait (a slow
provider call, a batch waiting for the database), or that waits in the pull
buffer behind such a batch, would be redelivered while this process still holds
it: to this replica or another, which then runs it a second time. Every third
of the ack wait, each held message is told "in progress", which restarts the
server's ack timer. How long a message is held is bounded by the consumer (its
run timeout), so a hung handler cannot keep a fact from the others forever.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from nats.aio.msg import Msg

log = logging.getLogger(__name__)


class KeepAlive:
    """Sends ``in_progress`` for every held message, and for those a source lists, until stopped.

    Args:
        ack_wait: The consumer's ack wait, in seconds.
        waiting: Lists the messages received but not yet handed out (the pull buffer).
    """

    def __init__(self, ack_wait: float, waiting: Callable[[], Iterable[Msg]] = tuple) -> None:
        self._every = max(0.05, ack_wait / 3)
        self._waiting = waiting
        self._held: dict[int, Msg] = {}

    def hold(self, msgs: Iterable[Msg]) -> None:
        for msg in msgs:
            self._held[id(msg)] = msg

    def release(self, msg: Msg) -> None:
        self._held.pop(id(msg), None)

    async def run(self) -> None:
        """Ticks until cancelled."""
        while True:
            await asyncio.sleep(self._every)
            for msg in [*self._held.values(), *self._waiting()]:
                if msg._ackd:
                    continue
                try:
                    await msg.in_progress()
                except Exception as exc:  # NATS down: the server redelivers after the ack wait
                    log.debug("in_progress failed: %r", exc)
                    break
