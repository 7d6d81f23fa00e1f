"""``choreo.db.lock_key``: transactions on one key take turns; on different keys they do not wait."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from choreo.db import key_lock_id, lock_key, make_engine
from tests.conftest import make_database_url


@pytest.fixture
async def pg(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    async for url in make_database_url("postgres", tmp_path):
        engine = make_engine(url)
        try:
            yield engine
        finally:
            await engine.dispose()


def test_the_lock_id_is_a_stable_signed_64_bit_number_per_namespace_and_key() -> None:
    ids = {key_lock_id("payment", "b-1"), key_lock_id("payment", "b-2"), key_lock_id("inventory", "b-1")}
    assert len(ids) == 3
    assert all(-(2**63) <= i < 2**63 for i in ids)
    # Pinned: every process and every release must lock the same number for the same key.
    assert key_lock_id("payment", "b-1") == 6316820773910758863
    assert key_lock_id("ab", "c") != key_lock_id("a", "bc")


async def _hold(engine: AsyncEngine, key: str, entered: asyncio.Event, release: asyncio.Event) -> None:
    async with engine.begin() as conn:
        await lock_key(conn, "test", key)
        entered.set()
        await release.wait()


async def test_two_transactions_on_one_key_take_turns(pg: AsyncEngine) -> None:
    first_in, first_go = asyncio.Event(), asyncio.Event()
    second_in, second_go = asyncio.Event(), asyncio.Event()
    first = asyncio.create_task(_hold(pg, "b-1", first_in, first_go))
    await asyncio.wait_for(first_in.wait(), 5)
    second = asyncio.create_task(_hold(pg, "b-1", second_in, second_go))
    await asyncio.sleep(0.5)
    assert not second_in.is_set(), "the second transaction took the key while the first held it"
    first_go.set()
    await first
    await asyncio.wait_for(second_in.wait(), 5)  # the first committed: the key is free
    second_go.set()
    await second


async def test_transactions_on_different_keys_do_not_wait(pg: AsyncEngine) -> None:
    first_in, first_go = asyncio.Event(), asyncio.Event()
    second_in, second_go = asyncio.Event(), asyncio.Event()
    first = asyncio.create_task(_hold(pg, "b-1", first_in, first_go))
    await asyncio.wait_for(first_in.wait(), 5)
    second = asyncio.create_task(_hold(pg, "b-2", second_in, second_go))
    await asyncio.wait_for(second_in.wait(), 5)
    first_go.set()
    second_go.set()
    await asyncio.gather(first, second)


async def test_the_lock_ends_with_a_rolled_back_transaction(pg: AsyncEngine) -> None:
    with pytest.raises(RuntimeError):
        async with pg.begin() as conn:
            await lock_key(conn, "test", "b-1")
            raise RuntimeError("the handler failed")
    entered, go = asyncio.Event(), asyncio.Event()
    go.set()
    await asyncio.wait_for(_hold(pg, "b-1", entered, go), 5)


async def test_on_sqlite_it_takes_nothing(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    try:
        async with engine.begin() as conn:
            await lock_key(conn, "test", "b-1")  # writers are serialised by BEGIN IMMEDIATE already
            await lock_key(conn, "test", "b-1")
    finally:
        await engine.dispose()
