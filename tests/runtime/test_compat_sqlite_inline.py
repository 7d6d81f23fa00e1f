"""Parity of ``choreo.compat.sqlite_inline``: SQLite on the loop's thread behind the AsyncEngine interface."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from choreo.compat.sqlite_inline import InlineEngine, InlineEngineMisuse
from choreo.db import make_engine, normalize_url
from tests.support import row_count

metadata = MetaData()
items = Table("items", metadata, Column("id", Integer, primary_key=True), Column("name", String(20)))


async def count(engine: AsyncEngine) -> int:
    return await row_count(engine, items)


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


async def test_an_orm_session_or_a_direct_sync_connection_is_refused(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'd.db'}")
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    async with AsyncSession(engine) as session:
        with pytest.raises(InlineEngineMisuse, match="AsyncSession"):
            await session.execute(select(items))
    with pytest.raises(InlineEngineMisuse, match=r"engine\.begin"):
        engine.sync_engine.connect()
    async with engine.begin() as conn:  # the refusals took no connection away
        await conn.execute(insert(items), {"name": "still works"})
    assert await count(engine) == 1
    await engine.dispose()


async def test_a_refused_checkout_fails_at_once_while_the_connection_is_busy(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'e.db'}")
    async with engine.begin():
        started = asyncio.get_running_loop().time()
        with pytest.raises(Exception, match="QueuePool limit"):
            engine.sync_engine.connect()  # would otherwise block the loop for the pool's timeout
        assert asyncio.get_running_loop().time() - started < 1
    await engine.dispose()


@pytest.mark.parametrize("scheme", ["sqlite", "sqlite+pysqlite", "sqlite+aiosqlite"])
async def test_every_sqlite_spelling_runs_pysqlite_inline(tmp_path: Path, scheme: str) -> None:
    url = f"{scheme}:///{tmp_path / 'f.db'}"
    assert normalize_url(url) == f"sqlite+pysqlite:///{tmp_path / 'f.db'}"
    engine = make_engine(url)
    assert isinstance(engine, InlineEngine)
    assert engine.dialect.driver == "pysqlite"
    await engine.dispose()


async def test_an_in_memory_database_is_one_database(tmp_path: Path) -> None:
    engine = make_engine("sqlite+aiosqlite:///:memory:")
    assert isinstance(engine, InlineEngine)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
        await conn.execute(insert(items), {"name": "a"})
    assert await count(engine) == 1
    await engine.dispose()
