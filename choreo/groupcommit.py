"""Group commit: many callers' items, one transaction per batch, each caller its own answer.

A database commit costs about the same for one row as for a hundred (the fsync,
the round trip, SQLite's single writer), so writers that arrive together should
share one. ``GroupCommit`` queues the items callers submit; a single worker takes
everything that queued up (at most ``max_batch``) and hands it to one ``commit``
call, and whatever arrives while that call runs is the next batch. At low load a
batch is one item and costs what a direct commit would; under load the number of
commits follows the commit's duration, not the number of callers.

The worker is a task of its own, started when an item arrives and ended when the
queue is empty. A caller that is cancelled stops waiting but never abandons a
transaction half-way: its item stays in the batch, and the others get their
answers. The primitive holds no policy of its own about failures: ``commit``
decides, per item, what each caller sees (see ``Commit``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger(__name__)

#: Commits a batch and returns one outcome per item, in order: a value is that
#: caller's result, an exception instance is raised to that caller alone. If it
#: raises, every caller of the batch gets that exception.
Commit = Callable[[list[T]], Awaitable[Sequence[R | Exception]]]


class Overloaded(Exception):
    """``max_queue`` items are already waiting: the item was not queued."""


class Closed(Exception):
    """The group commit was closed: the item was not queued."""


class GroupCommit(Generic[T, R]):
    """Batches concurrently submitted items into one ``commit`` call at a time.

    Args:
        commit: Commits a batch; see ``Commit``.
        max_batch: Most items in one batch (``None``: all that are waiting).
        max_queue: Most items waiting for a batch (``None``: no bound); beyond it,
            submitting raises ``Overloaded`` at once, so a caller can shed load
            instead of waiting behind a queue it cannot see the end of.
        name: Name of the worker task (debugging).
    """

    def __init__(
        self,
        commit: Commit[T, R],
        *,
        max_batch: int | None = None,
        max_queue: int | None = None,
        name: str = "group-commit",
    ) -> None:
        if max_batch is not None and max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, not {max_batch}")
        self._commit = commit
        self._max_batch = max_batch
        self._max_queue = max_queue
        self._name = name
        # An item with no future is answered by ``commit`` itself (``put_nowait``).
        self._queue: list[tuple[T, asyncio.Future[R] | None]] = []
        self._worker: asyncio.Task[None] | None = None
        self._closed = False

    async def submit(self, item: T) -> R:
        """Queues ``item`` and returns its result once its batch is committed.

        Raises:
            Overloaded: ``max_queue`` items were already waiting.
            Closed: ``close`` was called.
            Exception: the outcome ``commit`` gave this item, or the exception it raised.
        """
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._put(item, future)
        return await future

    def put_nowait(self, item: T) -> None:
        """Queues ``item`` without waiting for it: for a ``commit`` that answers each item
        itself (e.g. replies to a request), called from where waiting would stall others
        (e.g. a subscription's message callback). Its outcome is dropped.

        Raises:
            Overloaded: ``max_queue`` items were already waiting.
            Closed: ``close`` was called.
        """
        self._put(item, None)

    def _put(self, item: T, future: asyncio.Future[R] | None) -> None:
        if self._closed:
            raise Closed(f"{self._name} is closed")
        if self._max_queue is not None and len(self._queue) >= self._max_queue:
            raise Overloaded(f"{self._name}: {self._max_queue} items waiting")
        self._queue.append((item, future))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._work(), name=self._name)

    async def close(self) -> None:
        """Refuses new items, then returns once everything queued before is committed and answered.

        Cancelling ``close`` (a shutdown whose grace ran out) cancels the worker too: the batch
        in hand is rolled back and its callers cancelled, rather than committed unanswered after
        the service has closed its connections.
        """
        self._closed = True
        worker = self._worker
        if worker is None:
            return
        try:
            # ``wait``: does not raise what ended the worker.
            await asyncio.wait([worker])
        except asyncio.CancelledError:
            worker.cancel()
            await asyncio.wait([worker])
            raise

    async def _work(self) -> None:
        while self._queue:
            if self._max_batch is None or len(self._queue) <= self._max_batch:
                taken, self._queue = self._queue, []
            else:
                taken = self._queue[: self._max_batch]
                del self._queue[: self._max_batch]
            try:
                outcomes = await self._commit([item for item, _ in taken])
                if len(outcomes) != len(taken):
                    raise RuntimeError(f"{self._name}: {len(outcomes)} outcomes for {len(taken)} items")
            except asyncio.CancelledError:
                # The worker itself was cancelled (shutdown): nobody will answer these callers.
                for _, future in taken + self._queue:
                    if future is not None:
                        future.cancel()
                self._queue = []
                raise
            except Exception as exc:
                unseen = 0  # ``put_nowait`` items and callers that gave up: nobody else sees it
                for _, future in taken:
                    if future is None or future.done():
                        unseen += 1
                    else:
                        future.set_exception(exc)
                if unseen:
                    log.error(
                        "%s: a batch of %d failed (%d of them answered by nobody)",
                        self._name,
                        len(taken),
                        unseen,
                        exc_info=exc,
                    )
                continue
            for (_, future), outcome in zip(taken, outcomes, strict=True):
                if future is None or future.done():  # answered by commit, or the caller gave up
                    continue
                if isinstance(outcome, Exception):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)
