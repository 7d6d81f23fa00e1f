"""SQLite on the loop's thread behind the AsyncEngine interface."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from choreo.db import make_engine
from choreo.sqlite_inline import InlineEngine

metadata = MetaData()
items = Table("items", metadata, Column("id", Integer, primary_key=True), Column("name", String(20)))


async def count(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(items))).scalar_one())


async def test_transactions_commit_or_roll_back(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'a.db'}")
    assert isinstance(engine, InlineEngine)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
        await conn.execute(insert(items), [{"name": "a"}, {"name": "b"}])
    with pytest.raises(RuntimeError):
        async with engine.begin() as conn:
            await conn.execute(insert(items), {"name": "c"})
            raise RuntimeError("abort")
    assert await count(engine) == 2
    async with engine.connect() as conn:
        names = (await conn.exec_driver_sql("SELECT name FROM items ORDER BY id")).scalars().all()
    assert names == ["a", "b"]
    await engine.dispose()


async def test_write_transactions_take_turns_and_readers_never_wait(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'b.db'}"
    writer, reader = make_engine(url), make_engine(url, writer=False)
    async with writer.begin() as conn:
        await conn.run_sync(metadata.create_all)
    order: list[str] = []
    inside = asyncio.Event()

    async def first() -> None:
        async with writer.begin() as conn:
            await conn.execute(insert(items), {"name": "first"})
            inside.set()
            # Another task runs meanwhile: its write waits on the loop, reads go on.
            assert await count(reader) == 0
            await asyncio.sleep(0.05)
            order.append("first commits")

    async def second() -> None:
        await inside.wait()
        async with writer.begin() as conn:
            order.append("second begins")
            await conn.execute(insert(items), {"name": "second"})

    await asyncio.wait_for(asyncio.gather(first(), second()), 5)
    assert order == ["first commits", "second begins"]
    assert await count(reader) == 2
    await writer.dispose()
    await reader.dispose()


async def test_a_second_transaction_in_the_same_task_fails_instead_of_hanging(tmp_path: Path) -> None:
    engine = InlineEngine(
        create_engine(f"sqlite:///{tmp_path / 'c.db'}", pool_size=1), 1, checkout_timeout=0.2
    )
    async with engine.begin():
        with pytest.raises(TimeoutError, match="no free connection"):
            async with engine.begin():
                pass
    async with engine.begin() as conn:  # the slot came back
        await conn.run_sync(metadata.create_all)
    await engine.dispose()
