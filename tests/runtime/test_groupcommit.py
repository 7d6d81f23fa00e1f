"""GroupCommit: concurrent items share one SQLite transaction, each caller gets its own answer."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from choreo.db import make_engine
from choreo.groupcommit import Closed, GroupCommit, Overloaded

metadata = MetaData()
items = Table(
    "items",
    metadata,
    Column("key", String, primary_key=True),
    Column("value", Integer, nullable=False),
)


class Ledger:
    """A commit function on real SQLite: one transaction per batch, each item a row.

    An item ``(key, value)`` becomes a row; its caller's result is ``value * 10``, read
    back from the transaction. A negative value is refused for that item alone. The
    commit can be held open (``hold``) to let callers queue up behind it.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.batches: list[list[str]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.started = asyncio.Event()

    def hold(self) -> None:
        self.gate.clear()
        self.started.clear()

    async def commit(self, batch: list[tuple[str, int]]) -> list[int | Exception]:
        self.batches.append([key for key, _ in batch])
        self.started.set()
        await self.gate.wait()
        outcomes: list[int | Exception] = []
        async with self.engine.begin() as conn:
            accepted = [(key, value) for key, value in batch if value >= 0]
            if accepted:
                await conn.execute(insert(items), [{"key": k, "value": v} for k, v in accepted])
            read_back = select(items.c.key, (items.c.value * 10).label("result")).where(
                items.c.key.in_([k for k, _ in accepted])
            )
            stored = {row.key: row.result for row in await conn.execute(read_back)}
        for key, value in batch:
            outcomes.append(ValueError(f"{key}: negative") if value < 0 else stored[key])
        return outcomes

    async def keys(self) -> set[str]:
        async with self.engine.connect() as conn:
            return set((await conn.execute(select(items.c.key))).scalars())


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[Ledger]:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'gc.db'}")
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    yield Ledger(engine)
    await engine.dispose()


async def test_items_submitted_during_a_commit_share_the_next_transaction(ledger: Ledger) -> None:
    group: GroupCommit[tuple[str, int], int] = GroupCommit(ledger.commit)
    ledger.hold()
    first = asyncio.create_task(group.submit(("first", 1)))
    await asyncio.wait_for(ledger.started.wait(), 5)
    rest = [asyncio.create_task(group.submit((f"k{i}", i))) for i in range(20)]
    await asyncio.sleep(0.05)
    assert ledger.batches == [["first"]], "nothing may start while a commit runs"
    ledger.gate.set()
    results = await asyncio.wait_for(asyncio.gather(first, *rest), 5)
    assert ledger.batches == [["first"], [f"k{i}" for i in range(20)]]
    assert results == [10, *(i * 10 for i in range(20))], "each caller gets its own item's result"
    assert await ledger.keys() == {"first", *(f"k{i}" for i in range(20))}


async def test_an_outcome_that_is_an_exception_fails_only_its_caller(ledger: Ledger) -> None:
    group: GroupCommit[tuple[str, int], int] = GroupCommit(ledger.commit)
    callers = [asyncio.create_task(group.submit(item)) for item in (("a", 1), ("bad", -1), ("b", 2))]
    await asyncio.wait(callers, timeout=5)
    assert len(ledger.batches) == 1
    assert await callers[0] == 10 and await callers[2] == 20
    with pytest.raises(ValueError, match="bad: negative"):
        await callers[1]  # raised, not returned
    assert await ledger.keys() == {"a", "b"}


async def test_a_failing_batch_fails_its_callers_only_and_the_next_batch_commits(ledger: Ledger) -> None:
    group: GroupCommit[tuple[str, int], int] = GroupCommit(ledger.commit)
    assert await group.submit(("taken", 1)) == 10
    ledger.hold()
    blocker = asyncio.create_task(group.submit(("blocker", 1)))
    await asyncio.wait_for(ledger.started.wait(), 5)
    # One batch: a duplicate key makes its whole transaction fail.
    doomed = [asyncio.create_task(group.submit((key, 2))) for key in ("x", "taken", "y")]
    await asyncio.sleep(0.05)
    ledger.gate.set()
    assert await blocker == 10
    outcomes = await asyncio.gather(*doomed, return_exceptions=True)
    assert all(isinstance(o, IntegrityError) for o in outcomes), outcomes
    assert await group.submit(("after", 3)) == 30, "the worker goes on after a failed batch"
    assert await ledger.keys() == {"taken", "blocker", "after"}, "the failed batch wrote nothing"


async def test_a_cancelled_caller_leaves_the_others_and_its_item_in_the_batch(ledger: Ledger) -> None:
    group: GroupCommit[tuple[str, int], int] = GroupCommit(ledger.commit)
    ledger.hold()
    blocker = asyncio.create_task(group.submit(("blocker", 1)))
    await asyncio.wait_for(ledger.started.wait(), 5)
    callers = [asyncio.create_task(group.submit((key, 2))) for key in ("a", "gone", "b")]
    await asyncio.sleep(0.01)
    callers[1].cancel()
    ledger.gate.set()
    assert await blocker == 10
    assert await callers[0] == 20 and await callers[2] == 20
    assert callers[1].cancelled()
    # Cancelling stops the wait, not the write: the batch was already the worker's.
    assert ledger.batches[1] == ["a", "gone", "b"]
    assert await ledger.keys() == {"blocker", "a", "gone", "b"}


async def test_close_answers_everything_queued_then_refuses(ledger: Ledger) -> None:
    group: GroupCommit[tuple[str, int], int] = GroupCommit(ledger.commit)
    ledger.hold()
    in_flight = asyncio.create_task(group.submit(("in-flight", 1)))
    await asyncio.wait_for(ledger.started.wait(), 5)
    queued = [asyncio.create_task(group.submit((f"q{i}", i))) for i in range(5)]
    await asyncio.sleep(0)
    closing = asyncio.create_task(group.close())
    await asyncio.sleep(0.05)
    assert not closing.done(), "close returned while a batch was still committing"
    with pytest.raises(Closed):
        await group.submit(("late", 1))
    ledger.gate.set()
    await asyncio.wait_for(closing, 5)
    assert in_flight.done() and all(q.done() for q in queued), "close returned before answering"
    assert await in_flight == 10 and [await q for q in queued] == [i * 10 for i in range(5)]
    assert await ledger.keys() == {"in-flight", *(f"q{i}" for i in range(5))}


async def test_a_cancelled_close_rolls_the_batch_in_hand_back_instead_of_committing_it_later(
    ledger: Ledger,
) -> None:
    """A shutdown whose grace ran out: nothing is committed after the service let go of it."""
    group: GroupCommit[tuple[str, int], int] = GroupCommit(ledger.commit)
    ledger.hold()
    in_flight = asyncio.create_task(group.submit(("in-flight", 1)))
    await asyncio.wait_for(ledger.started.wait(), 5)
    queued = asyncio.create_task(group.submit(("queued", 2)))
    await asyncio.sleep(0)
    closing = asyncio.create_task(group.close())
    await asyncio.sleep(0.05)
    closing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closing
    ledger.gate.set()  # the commit would go on here, had the worker outlived close
    await asyncio.sleep(0.1)
    assert in_flight.cancelled() and queued.cancelled()
    assert await ledger.keys() == set()


async def test_max_batch_splits_what_is_waiting(ledger: Ledger) -> None:
    group: GroupCommit[tuple[str, int], int] = GroupCommit(ledger.commit, max_batch=4)
    results = await asyncio.gather(*(group.submit((f"k{i}", i)) for i in range(10)))
    assert results == [i * 10 for i in range(10)]
    assert [len(b) for b in ledger.batches] == [4, 4, 2]
    assert [k for b in ledger.batches for k in b] == [f"k{i}" for i in range(10)], "in submission order"


async def test_a_full_queue_refuses_at_once(ledger: Ledger) -> None:
    group: GroupCommit[tuple[str, int], int] = GroupCommit(ledger.commit, max_queue=2)
    ledger.hold()
    in_flight = asyncio.create_task(group.submit(("in-flight", 1)))
    await asyncio.wait_for(ledger.started.wait(), 5)  # taken: no longer waiting
    queued = [asyncio.create_task(group.submit((f"q{i}", i))) for i in range(2)]
    await asyncio.sleep(0)
    with pytest.raises(Overloaded):
        await group.submit(("third", 3))
    with pytest.raises(Overloaded):
        group.put_nowait(("fourth", 4))
    ledger.gate.set()
    assert await in_flight == 10 and [await q for q in queued] == [0, 10]
    assert await group.submit(("room-again", 5)) == 50
    assert "third" not in await ledger.keys() and "fourth" not in await ledger.keys()


async def test_put_nowait_commits_and_a_failure_nobody_waits_for_is_logged(
    ledger: Ledger, caplog: pytest.LogCaptureFixture
) -> None:
    group: GroupCommit[tuple[str, int], int] = GroupCommit(ledger.commit, name="fire-and-forget")
    group.put_nowait(("a", 1))
    group.put_nowait(("b", 2))
    await group.close()
    assert ledger.batches == [["a", "b"]] and await ledger.keys() == {"a", "b"}

    again: GroupCommit[tuple[str, int], int] = GroupCommit(ledger.commit, name="fire-and-forget")
    with caplog.at_level(logging.ERROR, logger="choreo.groupcommit"):
        again.put_nowait(("a", 1))  # a duplicate: the transaction fails
        await again.close()
    assert any("fire-and-forget" in r.getMessage() and r.exc_info for r in caplog.records)


async def test_a_failed_batch_is_logged_when_a_put_nowait_item_shares_it_with_a_caller(
    ledger: Ledger, caplog: pytest.LogCaptureFixture
) -> None:
    """The caller sees the failure; the ``put_nowait`` item's owner (a request to answer) does not."""
    group: GroupCommit[tuple[str, int], int] = GroupCommit(ledger.commit, name="mixed")
    assert await group.submit(("taken", 1)) == 10
    ledger.hold()
    blocker = asyncio.create_task(group.submit(("blocker", 1)))
    await asyncio.wait_for(ledger.started.wait(), 5)
    caller = asyncio.create_task(group.submit(("x", 2)))
    group.put_nowait(("taken", 2))  # a duplicate key: the whole next batch fails
    await asyncio.sleep(0.01)
    with caplog.at_level(logging.ERROR, logger="choreo.groupcommit"):
        ledger.gate.set()
        assert await blocker == 10
        with pytest.raises(IntegrityError):
            await caller
        await group.close()
    assert sorted(ledger.batches[-1]) == ["taken", "x"]
    assert any("mixed" in r.getMessage() and "1 of them" in r.getMessage() for r in caplog.records)


async def test_a_commit_that_miscounts_its_outcomes_fails_its_callers() -> None:
    async def short(batch: list[int]) -> list[int | Exception]:
        return [item for item in batch[1:]]

    group: GroupCommit[int, int] = GroupCommit(short)
    outcomes = await asyncio.wait_for(
        asyncio.gather(group.submit(1), group.submit(2), return_exceptions=True), 5
    )
    assert all(isinstance(o, RuntimeError) and "1 outcomes for 2 items" in str(o) for o in outcomes)


async def test_a_cancelled_worker_cancels_its_callers_instead_of_leaving_them_waiting() -> None:
    started = asyncio.Event()

    async def forever(batch: list[int]) -> list[int | Exception]:
        started.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    group: GroupCommit[int, int] = GroupCommit(forever, name="doomed")
    first = asyncio.create_task(group.submit(1))
    await asyncio.wait_for(started.wait(), 5)
    queued = asyncio.create_task(group.submit(2))
    await asyncio.sleep(0)
    worker = next(t for t in asyncio.all_tasks() if t.get_name() == "doomed")
    worker.cancel()
    done, _ = await asyncio.wait([first, queued], timeout=5)
    assert done == {first, queued} and first.cancelled() and queued.cancelled()
    await group.close()  # returns, though the worker ended cancelled
