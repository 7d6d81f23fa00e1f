"""The read model's database, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

import pytest

from choreo.db import is_sqlite, make_engine, normalize_url
from gateway.readmodel.model import Change, Cursor, Status, TraceRecord
from gateway.readmodel.store import ReadModel, StaleBatch, WriteBatch


# No views in memory, a cache so small that every test evicts, and the default.
@pytest.fixture(params=[0, 2, 10_000], ids=["no-cache", "tiny-cache", "cache"])
async def store(
    database_url: str, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[ReadModel, list[set[str]]]]:
    writer = make_engine(database_url)
    reader = make_engine(database_url, writer=False) if is_sqlite(normalize_url(database_url)) else writer
    notified: list[set[str]] = []
    model = ReadModel(
        writer, reader, on_commit=lambda views: notified.append(set(views)), recent_views=request.param
    )
    await model.create_tables()
    yield model, notified
    await writer.dispose()
    if reader is not writer:
        await reader.dispose()


def created(booking_id: str, at: int, user: str = "u1") -> Change:
    return Change(
        booking_id=booking_id,
        at_us=at,
        status=Status.PENDING,
        user_id=user,
        amount_cents=100,
        currency="USD",
        correlation_id=f"c-{booking_id}",
        created_at_us=at,
    )


def trace(event_id: str, correlation_id: str, seq: int) -> TraceRecord:
    return TraceRecord(
        event_id=event_id,
        correlation_id=correlation_id,
        booking_id="",
        event_type="t",
        source="s",
        subject="booking.created",
        stream="BOOKING",
        stream_sequence=seq,
        causation_id="",
        occurred_at_us=seq,
    )


async def test_a_batch_merges_bookings_indexes_facts_and_moves_the_checkpoint(
    store: tuple[ReadModel, list[set[str]]],
) -> None:
    model, notified = store
    await model.write(
        WriteBatch(
            trace=[trace("e1", "c-b1", 1), trace("e2", "c-b1", 2)],
            changes=[
                created("b1", 10),
                Change(booking_id="b1", at_us=20, status=Status.CONFIRMED, payment_id="p"),
            ],
            checkpoints={"BOOKING": 2},
        )
    )
    view = await model.get("b1")
    assert view is not None and view.status is Status.CONFIRMED and view.payment_id == "p"
    assert view.user_id == "u1" and view.updated_at_us == 20
    assert await model.checkpoint("BOOKING") == 2 and await model.checkpoint("PAYMENT") == 0
    assert sorted(e.event_id for e in await model.trace("c-b1")) == ["e1", "e2"]
    assert await model.correlation_of("b1") == "c-b1"
    assert notified == [{"b1"}]

    # The same facts again (a replay): nothing changes, nobody is woken, the index keeps one copy.
    await model.write(
        WriteBatch(trace=[trace("e1", "c-b1", 1)], changes=[created("b1", 10)], checkpoints={"BOOKING": 3})
    )
    assert notified == [{"b1"}]
    assert await model.count("trace_events") == 2
    assert await model.checkpoint("BOOKING") == 3
    assert await model.get("missing") is None and await model.correlation_of("missing") is None


async def test_changes_merge_into_views_read_back_after_other_writes(
    store: tuple[ReadModel, list[set[str]]],
) -> None:
    model, _ = store
    await model.write(WriteBatch(changes=[created("b1", 10)]))
    # Other bookings change meanwhile (with a tiny cache, b1's view is pushed out).
    await model.write(WriteBatch(changes=[created(f"o{i}", 11 + i) for i in range(3)]))
    await model.write(WriteBatch(changes=[Change(booking_id="b1", at_us=30, status=Status.CONFIRMED)]))
    view = await model.get("b1")
    assert view is not None and view.status is Status.CONFIRMED
    assert (view.user_id, view.amount_cents, view.created_at_us) == ("u1", 100, 10)
    # A fact older than what the view holds does not take it back.
    await model.write(WriteBatch(changes=[created("b1", 10)]))
    again = await model.get("b1")
    assert again == view
    assert [
        v.booking_id
        for v in await model.list_bookings(user_id="u1", status=Status.CONFIRMED, limit=5, after=None)
    ] == ["b1"]


async def test_a_failed_batch_writes_nothing(store: tuple[ReadModel, list[set[str]]]) -> None:
    model, notified = store
    bad = dataclasses.replace(trace("e9", "c", 9), correlation_id=None)  # type: ignore[arg-type]
    with pytest.raises(Exception):  # noqa: B017 - the NOT NULL violation differs per driver
        await model.write(WriteBatch(trace=[bad], changes=[created("b9", 9)], checkpoints={"BOOKING": 9}))
    assert await model.get("b9") is None
    assert await model.checkpoint("BOOKING") == 0
    assert notified == []


async def test_concurrent_writes_are_group_committed(store: tuple[ReadModel, list[set[str]]]) -> None:
    model, notified = store
    await asyncio.gather(*(model.write(WriteBatch(changes=[created(f"b{i:03}", i)])) for i in range(100)))
    assert await model.count("bookings") == 100
    assert model.commits < 100  # writes that queued during a commit shared the next one
    assert set().union(*notified) == {f"b{i:03}" for i in range(100)}


async def test_list_pages_newest_first_with_filters(store: tuple[ReadModel, list[set[str]]]) -> None:
    model, _ = store
    changes = [created(f"b{i}", 1_000 + i // 2, user="u1" if i % 3 else "u2") for i in range(12)]
    changes.append(Change(booking_id="b4", at_us=5_000, status=Status.CONFIRMED))
    await model.write(WriteBatch(changes=changes))

    seen: list[str] = []
    after: Cursor | None = None
    while True:
        page = await model.list_bookings(user_id="", status=None, limit=5, after=after)
        seen += [v.booking_id for v in page]
        if len(page) < 5:
            break
        after = Cursor(page[-1].created_at_us, page[-1].booking_id)
    # Newest first; equal creation times broken by id, descending; no duplicates, no gaps.
    assert seen == ["b11", "b10", "b9", "b8", "b7", "b6", "b5", "b4", "b3", "b2", "b1", "b0"]

    u2 = await model.list_bookings(user_id="u2", status=None, limit=50, after=None)
    assert [v.booking_id for v in u2] == ["b9", "b6", "b3", "b0"]
    confirmed = await model.list_bookings(user_id="", status=Status.CONFIRMED, limit=50, after=None)
    assert [v.booking_id for v in confirmed] == ["b4"]
    assert await model.list_bookings(user_id="u2", status=Status.CONFIRMED, limit=50, after=None) == []


async def test_a_batch_read_before_a_rebuild_is_refused_while_its_companions_commit(
    store: tuple[ReadModel, list[set[str]]],
) -> None:
    model, _ = store
    await model.rebuild(model.generation, "test")
    commits = model.commits
    stale, current = await asyncio.gather(
        model.write(WriteBatch(changes=[created("old", 1)], checkpoints={"BOOKING": 7}, generation=0)),
        model.write(WriteBatch(changes=[created("new", 2)], generation=model.generation)),
        return_exceptions=True,
    )
    assert isinstance(stale, StaleBatch) and current is None
    assert model.commits == commits + 1, "both were in one batch: one transaction"
    assert await model.get("old") is None and await model.get("new") is not None
    assert await model.checkpoint("BOOKING") == 0


async def test_a_failing_commit_listener_does_not_fail_durable_writes(database_url: str) -> None:
    writer = make_engine(database_url)

    def broken(views: object) -> None:
        raise RuntimeError("listener bug")

    model = ReadModel(writer, writer, on_commit=broken)
    try:
        await model.create_tables()
        await model.write(WriteBatch(changes=[created("b1", 1)]))
        await model.write(WriteBatch(changes=[created("b2", 2)]))
        assert await model.get("b1") is not None and await model.get("b2") is not None
    finally:
        await writer.dispose()
