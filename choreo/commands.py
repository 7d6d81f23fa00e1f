"""Serving commands over NATS request/reply, with group commit.

Requests are queued as they arrive and handed to the handler in batches
(``choreo.groupcommit``): all the requests that arrived while the previous
batch was committing go into the next transaction. Under load this turns one
commit per request into one commit per batch; at low load a batch is a single
request, so latency is unchanged. Replicas subscribe in one queue group, so
NATS spreads requests across them.

A requester that stops waiting must not have its command executed later (a
client that retries would then get a second booking, and a second charge). So a
command may carry a deadline (``choreo-deadline``: absolute Unix time in
milliseconds, so hosts' clocks must agree, e.g. through NTP). A command whose
deadline has passed when its batch is taken is not run: it gets an ``expired``
rejection instead. The handler checks again just before its commit
(``deadline_passed``), which leaves only the commit itself and the reply's
transit as the window in which a command can outlive its requester; the
requester waits a margin past the deadline to cover them. The queue is bounded:
beyond ``max_queue`` waiting requests the server answers ``overloaded`` at once.

A rejection is a reply with an empty body and a ``choreo-rejected`` header
(``REJECTED_EXPIRED`` or ``REJECTED_OVERLOADED``): in both cases the command was
not executed, and it is safe to send it again.

Replies go only to inboxes (``_INBOX.`` or a connection's ``_INBOX_<owner>.``,
choreo/natsidentity.py). The requester names the reply subject, and the server's
user may publish one answer to it whatever its own permissions say
(``allow_responses``): a requester naming ``$JS.API.STREAM.DELETE.BOOKING`` or a
fact subject would have the server delete a stream (a rejection's body is empty,
which is what that API expects) or store its answer as a fact. A request whose
reply subject is not an inbox is dropped unexecuted, and so is one without a reply
subject: nobody waits for its outcome, and a booking or a charge nobody waits for is
one nobody asked for.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from choreo.bus import flush_subscriptions
from choreo.groupcommit import Closed, GroupCommit, Overloaded

log = logging.getLogger(__name__)

#: Header carrying the command's deadline: absolute Unix time in milliseconds.
H_DEADLINE = "choreo-deadline"
#: Header of a reply that says the command was not executed, and why.
H_REJECTED = "choreo-rejected"
REJECTED_EXPIRED = "expired"
REJECTED_OVERLOADED = "overloaded"
#: Reply subjects start with one of these: the default inbox prefix, or a connection's own.
INBOX_PREFIXES = ("_INBOX.", "_INBOX_")

#: Handles a batch of requests and returns one reply payload per request, in order;
#: ``None`` for a request it did not execute because its deadline passed.
BatchHandler = Callable[[Sequence[Msg]], Awaitable[Sequence[bytes | None]]]


def deadline_header(deadline: float) -> str:
    """The ``choreo-deadline`` value for a deadline given as Unix time in seconds."""
    return str(int(deadline * 1000))


def deadline_of(msg: Msg) -> float | None:
    """The command's deadline (Unix time in seconds), ``None`` when it has none or it is unreadable."""
    value = (msg.headers or {}).get(H_DEADLINE)
    if not value:
        return None
    try:
        return int(value) / 1000
    except (ValueError, OverflowError):  # not a number; too many digits for a float
        log.warning("ignoring an unreadable %s header: %r", H_DEADLINE, value[:40])
        return None


def is_inbox(subject: str) -> bool:
    """Whether ``subject`` is an inbox, the only place a command's reply may go."""
    return subject.startswith(INBOX_PREFIXES) and "." in subject


def deadline_passed(deadline: float | None, now: float | None = None) -> bool:
    """Whether a deadline (from ``deadline_of``) has passed."""
    return deadline is not None and (time.time() if now is None else now) >= deadline


class CommandServer:
    """Subscribes to a command subject in a queue group and answers in batches.

    Args:
        nc: NATS connection.
        subject: Command subject, e.g. ``cmd.booking.create``.
        queue: Queue group shared by the service's replicas.
        handler: Turns a batch of requests into replies.
        max_batch: Most requests handled in one batch.
        max_queue: Most requests waiting for a batch; more are rejected as overloaded.

    Attributes:
        expired: Requests not executed because their deadline had passed.
        overloaded: Requests rejected because the queue was full.
        misdirected: Requests dropped unexecuted because their reply subject was not an inbox (or absent).
    """

    def __init__(
        self,
        nc: NATS,
        subject: str,
        queue: str,
        handler: BatchHandler,
        max_batch: int = 256,
        max_queue: int = 10_000,
    ) -> None:
        self._nc = nc
        self._subject = subject
        self._queue_group = queue
        self._handler = handler
        self._max_queue = max_queue
        self._batches: GroupCommit[Msg, None] = GroupCommit(
            self._serve, max_batch=max_batch, max_queue=max_queue, name=f"commands {subject}"
        )
        self._stop = asyncio.Event()
        self.ready = asyncio.Event()
        self.expired = 0
        self.overloaded = 0
        self.misdirected = 0

    async def _enqueue(self, msg: Msg) -> None:
        if not is_inbox(msg.reply or ""):
            self.misdirected += 1
            if self.misdirected == 1 or self.misdirected % 1000 == 0:
                log.warning(
                    "%s: dropped a command whose reply subject is not an inbox: %r (%d so far)",
                    self._subject,
                    msg.reply[:80],
                    self.misdirected,
                )
            return
        try:
            self._batches.put_nowait(msg)  # _serve replies to it
        except Overloaded:
            self.overloaded += 1
            if self.overloaded == 1 or self.overloaded % 1000 == 0:
                log.warning(
                    "%s: %d requests waiting; rejecting as overloaded (%d so far)",
                    self._subject,
                    self._max_queue,
                    self.overloaded,
                )
            await self._reject(msg, REJECTED_OVERLOADED)
        except Closed:  # arrived after the subscription's drain: another replica may take it
            await self._reject(msg, REJECTED_OVERLOADED)

    async def run(self) -> None:
        """Serves until ``stop``; requests already received are still answered."""
        if self._stop.is_set():  # stopped before it started: never take a request
            return
        sub = await self._nc.subscribe(self._subject, queue=self._queue_group, cb=self._enqueue)
        await flush_subscriptions(self._nc)
        self.ready.set()
        await self._stop.wait()
        # Requests NATS already delivered reach _enqueue during the drain; then the last batches.
        await self._drain(sub)
        await self._batches.close()

    async def _serve(self, taken: list[Msg]) -> list[None]:
        """Runs one batch and answers each of its requests (none when the batch failed)."""
        now = time.time()
        batch = []
        for msg in taken:
            if deadline_passed(deadline_of(msg), now):
                await self._reject(msg, REJECTED_EXPIRED)
            else:
                batch.append(msg)
        if batch:
            try:
                replies = await self._handler(batch)
                answers = list(zip(batch, replies, strict=True))
            except Exception:
                log.exception("command batch of %d failed", len(batch))
                answers = []  # requesters time out and may retry with their idempotency key
            for msg, reply in answers:
                if reply is None:
                    await self._reject(msg, REJECTED_EXPIRED)
                else:
                    await self._reply(msg, reply)
        return [None] * len(taken)

    async def _reject(self, msg: Msg, why: str) -> None:
        if why == REJECTED_EXPIRED:
            self.expired += 1
            if self.expired == 1 or self.expired % 1000 == 0:
                log.warning(
                    "%s: dropped a command past its deadline, not executed (%d so far)",
                    self._subject,
                    self.expired,
                )
        await self._reply(msg, b"", {H_REJECTED: why})

    async def _reply(self, msg: Msg, data: bytes, headers: dict[str, str] | None = None) -> None:
        if not msg.reply:
            return
        try:
            await self._nc.publish(msg.reply, data, headers=headers)
        except Exception as exc:
            log.warning("could not reply to %s: %r", msg.reply, exc)

    def stop(self) -> None:
        """Stops taking requests; other replicas of the queue group get them from now on."""
        self._stop.set()

    async def _drain(self, sub: Subscription) -> None:
        try:
            await sub.drain()  # type: ignore[no-untyped-call]
        except Exception as exc:
            log.debug("drain of %s failed: %r", self._subject, exc)
