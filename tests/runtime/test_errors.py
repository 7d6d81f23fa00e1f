"""``choreo.errors.classify`` on the failures the real drivers raise."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import nats.errors
import nats.js.errors
import pytest
from sqlalchemy import text

from choreo.db import make_engine
from choreo.errors import Failure, PermanentError, TransientError, classify
from choreoctl.stack.ports import free_port
from tests.conftest import PG_URL


class UnknownBooking(PermanentError):
    pass


def test_declared_kinds_win_through_wrappers() -> None:
    try:
        try:
            raise UnknownBooking("no booking b-1")
        except UnknownBooking as inner:
            raise RuntimeError("handler failed") from inner
    except RuntimeError as outer:
        assert classify(outer) is Failure.PERMANENT
    assert classify(TransientError("provider answered 503")) is Failure.TRANSIENT
    assert classify(ValueError("a bug")) is Failure.UNKNOWN
    assert classify(TimeoutError()) is Failure.TRANSIENT


async def test_postgres_that_refuses_connections_is_transient() -> None:
    url = PG_URL.replace("postgresql://", "postgresql+asyncpg://", 1).replace(":5432", f":{free_port()}")
    engine = make_engine(url)
    with pytest.raises(Exception) as caught:
        async with engine.begin() as conn:
            await conn.execute(text("SELECT 1"))
    await engine.dispose()
    assert classify(caught.value) is Failure.TRANSIENT


async def test_postgres_serialization_failure_is_transient_and_bad_sql_is_not() -> None:
    engine = make_engine(PG_URL.replace("postgresql://", "postgresql+asyncpg://", 1))
    try:
        with pytest.raises(Exception) as conflict:
            async with engine.begin() as conn:
                await conn.execute(
                    text(
                        "DO $$ BEGIN RAISE EXCEPTION 'conflict' "
                        "USING ERRCODE = 'serialization_failure'; END $$"
                    )
                )
        with pytest.raises(Exception) as bad_sql:
            async with engine.begin() as conn:
                await conn.execute(text("SELECT no_such_column FROM pg_class"))
    finally:
        await engine.dispose()
    assert classify(conflict.value) is Failure.TRANSIENT
    assert classify(bad_sql.value) is Failure.UNKNOWN


async def test_sqlite_lock_is_transient(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x INTEGER)")
    holder.execute("BEGIN IMMEDIATE")
    locked = sqlite3.connect(path, timeout=0.05, isolation_level=None)
    with pytest.raises(sqlite3.OperationalError) as caught:
        locked.execute("BEGIN IMMEDIATE")
    holder.close()
    locked.close()
    assert classify(caught.value) is Failure.TRANSIENT


def test_a_bug_raised_while_handling_a_timeout_is_still_a_bug(tmp_path: Path) -> None:
    try:
        try:
            raise TimeoutError("provider timed out")
        except TimeoutError:
            {}["missing-key"]
    except KeyError as exc:
        assert classify(exc) is Failure.UNKNOWN
    with pytest.raises(OSError) as missing:
        (tmp_path / "nope" / "config.json").read_text()
    assert classify(missing.value) is Failure.UNKNOWN


def test_sqlite_disk_full_is_transient(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "full.db", isolation_level=None)
    db.execute("CREATE TABLE t (x BLOB)")
    db.execute(f"PRAGMA max_page_count = {db.execute('PRAGMA page_count').fetchone()[0] + 1}")
    with pytest.raises(sqlite3.OperationalError) as full:
        for _ in range(10):
            db.execute("INSERT INTO t VALUES (zeroblob(8000))")
    db.close()
    assert classify(full.value) is Failure.TRANSIENT


@pytest.mark.parametrize(
    "error",
    [
        nats.errors.ConnectionReconnectingError(),
        nats.errors.NoServersError(),
        nats.errors.UnexpectedEOF(),
        nats.errors.ConnectionDrainingError(),
        nats.js.errors.NoStreamResponseError(),
    ],
    ids=type,
)
def test_nats_connection_states_are_transient(error: Exception) -> None:
    assert classify(error) is Failure.TRANSIENT


async def test_postgres_read_only_and_client_bugs() -> None:
    """A demoted primary (25006) passes; a wrong number of bind parameters is a bug."""
    url = PG_URL.replace("postgresql://", "postgresql+asyncpg://", 1)
    engine = make_engine(url)
    try:
        with pytest.raises(Exception) as read_only:
            async with engine.begin() as conn:
                await conn.execute(text("SET TRANSACTION READ ONLY"))
                await conn.execute(text("CREATE TEMP TABLE t (x int)"))
        with pytest.raises(Exception) as bad_call:
            async with engine.begin() as conn:
                await conn.exec_driver_sql("SELECT $1::int + $2::int", (1,))
    finally:
        await engine.dispose()
    assert classify(read_only.value) is Failure.TRANSIENT
    assert classify(bad_call.value) is Failure.UNKNOWN


def test_a_deferral_is_no_failure_kind_and_keeps_its_delay() -> None:
    """``Deferred`` says "not yet": the verdicts handle it before classifying; its delay is never negative."""
    from choreo.errors import Deferred

    assert Deferred(2.5).seconds == 2.5
    assert Deferred(-1).seconds == 0.0
    assert not isinstance(Deferred(1), PermanentError | TransientError)
