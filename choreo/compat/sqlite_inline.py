"""SQLite on the event loop's thread behind SQLAlchemy's ``AsyncEngine`` (a shim: see ``choreo.compat``).

A SQLite statement on a WAL database takes microseconds. Going through an
async driver costs far more than that: aiosqlite hands every call to a worker
thread and back, and SQLAlchemy's asyncio layer wraps every call (connect,
begin, each statement, commit, close) in a greenlet, so an empty transaction
cost about 190 µs on the benchmark machine against 55 µs for the same
transaction on the synchronous engine.

``InlineEngine`` is an ``AsyncEngine`` whose connections run SQLAlchemy's
synchronous pysqlite engine directly: the same ``async with engine.begin()``,
``await conn.execute(...)`` code works on it and on PostgreSQL's asyncpg
engine, and results are ordinary ``CursorResult`` objects. The driver that runs
is pysqlite (the standard library's ``sqlite3``), whatever the configured URL
says: ``sqlite+aiosqlite:///`` stays an accepted spelling of a SQLite URL
(``choreo.db.normalize_url``), but aiosqlite is not used.

That is only safe if a call can never wait on a lock, since a waiting SQLite
call would block the whole loop. Checkouts therefore wait on an asyncio
semaphore sized like the pool, never on the pool itself; ``choreo.db.make_engine``
gives a writer engine one connection, so the process's write transactions
take turns on the asyncio side instead of on SQLite's lock; and each service's
database belongs to that service alone. WAL readers never wait for the writer.

What it supports: Core on ``engine.connect()`` / ``engine.begin()`` (``execute``,
``exec_driver_sql``, ``run_sync``, ``execution_options``, commit and rollback).
Anything that takes a connection from the synchronous engine by itself (an ORM
``AsyncSession`` bound to it, or ``engine.sync_engine.connect()``) would wait for
the pool on the loop's thread; it is refused with ``InlineEngineMisuse``.

Replaces:
    SQLAlchemy's asyncio adaptation of the aiosqlite driver:
    ``AsyncEngine``/``AsyncConnection``/``AsyncTransaction`` in
    https://github.com/sqlalchemy/sqlalchemy/blob/main/lib/sqlalchemy/ext/asyncio/engine.py
    over https://github.com/sqlalchemy/sqlalchemy/blob/main/lib/sqlalchemy/dialects/sqlite/aiosqlite.py
    (written against SQLAlchemy 2.1).

Parity:
    ``tests/runtime/test_compat_sqlite_inline.py`` (commit and rollback, writers taking
    turns while readers go on, a nested checkout failing instead of hanging, an
    ``AsyncSession`` refused); every service test runs on it, and the same code runs
    on asyncpg in the PostgreSQL-parametrized tests (``tests/conftest.py``).

Remove when:
    an empty transaction through ``create_async_engine("sqlite+aiosqlite:///...")``
    costs about what it costs here (55 µs against 190 µs when this was written; the
    figure is in ``docs/benchmarks.md``), e.g. if SQLAlchemy runs a synchronous driver
    without a greenlet per call; or when services no longer run on SQLite. Then delete
    this module and let ``choreo.db.make_engine`` call ``create_async_engine``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncTransaction


class InlineEngineMisuse(RuntimeError):
    """A connection was asked of an ``InlineEngine``'s synchronous engine behind its back."""


class InlineEngine(AsyncEngine):
    """An ``AsyncEngine`` over a synchronous SQLite engine, without greenlets.

    Args:
        sync_engine: A ``sqlite://`` engine (pysqlite) with a ``QueuePool``.
        connections: Connections that may be checked out at once (the pool's size).
        checkout_timeout: Seconds to wait for a free connection before giving up, like
            SQLAlchemy's ``pool_timeout`` (a task that opens a second transaction on a
            one-connection engine while holding the first fails instead of hanging).
    """

    def __init__(self, sync_engine: Engine, connections: int, checkout_timeout: float = 30.0) -> None:
        # AsyncEngine.__init__ refuses a synchronous driver; this class never hands the
        # synchronous engine to a greenlet, so it sets up the proxy itself.
        self.sync_engine = self._assign_proxied(sync_engine)
        self._slots = asyncio.Semaphore(connections)
        self._connections = connections
        self._checkout_timeout = checkout_timeout
        #: True only while ``InlineConnection.start`` takes its connection (on the loop's thread).
        self._checking_out = False
        event.listen(sync_engine, "checkout", self._refuse_foreign_checkout)

    def _refuse_foreign_checkout(self, _dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        if not self._checking_out:
            raise InlineEngineMisuse(
                f"{self.sync_engine.url} is an InlineEngine (choreo.compat.sqlite_inline): it serves "
                "only Core connections from engine.connect() or engine.begin(); an ORM AsyncSession "
                "or a direct sync_engine connection would wait for SQLite on the event loop's thread "
                "(use `async with engine.begin() as conn` and Core statements)"
            )

    async def _checkout(self) -> None:
        try:
            async with asyncio.timeout(self._checkout_timeout):
                await self._slots.acquire()
        except TimeoutError:
            raise TimeoutError(
                f"no free connection to {self.sync_engine.url} after {self._checkout_timeout:g}s "
                f"({self._connections} in use)"
            ) from None

    def connect(self) -> InlineConnection:
        return InlineConnection(self)

    async def dispose(self, close: bool = True) -> None:
        self.sync_engine.dispose(close=close)


class InlineConnection(AsyncConnection):
    """An ``AsyncConnection`` whose calls run the synchronous connection at once."""

    engine: InlineEngine

    async def start(self, is_ctxmanager: bool = False) -> InlineConnection:
        # Wait for a free connection here, on the loop, never inside the pool.
        engine = self.engine
        await engine._checkout()
        engine._checking_out = True
        try:
            self.sync_connection = self._assign_proxied(self.sync_engine.connect())
        except BaseException:
            engine._slots.release()
            raise
        finally:
            engine._checking_out = False
        return self

    async def close(self) -> None:
        connection = self.sync_connection
        if connection is None:
            return
        self.sync_connection = None
        try:
            connection.close()
        finally:
            self.engine._slots.release()

    def begin(self) -> InlineTransaction:
        assert self._proxied
        return InlineTransaction(self)

    async def execute(
        self, statement: Any, parameters: Any = None, *, execution_options: Any = None
    ) -> CursorResult[Any]:
        return self._proxied.execute(statement, parameters, execution_options=execution_options)

    async def exec_driver_sql(
        self, statement: str, parameters: Any = None, execution_options: Any = None
    ) -> CursorResult[Any]:
        return self._proxied.exec_driver_sql(statement, parameters, execution_options)

    async def commit(self) -> None:
        self._proxied.commit()

    async def rollback(self) -> None:
        self._proxied.rollback()

    async def execution_options(self, **opt: Any) -> InlineConnection:
        self._proxied.execution_options(**opt)
        return self

    async def run_sync(self, fn: Callable[..., Any], *arg: Any, **kw: Any) -> Any:
        return fn(self._proxied, *arg, **kw)


class InlineTransaction(AsyncTransaction):
    """An ``AsyncTransaction`` on an ``InlineConnection``."""

    async def start(self, is_ctxmanager: bool = False) -> InlineTransaction:
        connection = self.connection._proxied
        self.sync_transaction = self._assign_proxied(
            connection.begin_nested() if self.nested else connection.begin()
        )
        if is_ctxmanager:
            self.sync_transaction.__enter__()
        return self

    async def __aexit__(self, type_: Any, value: Any, traceback: Any) -> None:
        self._proxied.__exit__(type_, value, traceback)

    async def commit(self) -> None:
        self._proxied.commit()

    async def rollback(self) -> None:
        self._proxied.rollback()
