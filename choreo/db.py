"""Database engines: SQLite (WAL) by default, PostgreSQL when the URL says so.

Hot paths use SQLAlchemy Core statements against tables that sqlmodel defines;
one transaction commits a whole batch of events, which is what makes SQLite fast
enough (one commit costs about as much as a hundred inserts).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import BigInteger, Column, Integer, Table, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool
from sqlalchemy.types import TypeEngine

from choreo.compat.sqlite_inline import InlineEngine

#: Auto-increment id that is a rowid alias on SQLite and a BIGSERIAL elsewhere.
BigIntId: TypeEngine[int] = BigInteger().with_variant(Integer(), "sqlite")


def big_int(*, index: bool = False, default: int | None = None) -> Any:
    """A sqlmodel field stored as BIGINT (timestamps in microseconds, sequences)."""
    from sqlmodel import Field

    column = Column(BigInteger, nullable=False, index=index)
    return Field(default=default, sa_column=column)


#: Execution option: this transaction only reads, so on SQLite it must not take the write lock.
READ_ONLY = "choreo_read_only"


@asynccontextmanager
async def read_only(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection for reads that never waits behind (or blocks) a writer on SQLite."""
    async with engine.connect() as conn:
        yield await conn.execution_options(**{READ_ONLY: True})


def now_us() -> int:
    """Wall-clock time in integer microseconds since the epoch.

    Times are stored this way everywhere: portable across SQLite and
    PostgreSQL, cheap to compare, and exact.
    """
    return time.time_ns() // 1000


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


#: SQLite URL schemes a setting may use; all of them run the same driver (``SQLITE_DRIVER``).
SQLITE_SCHEMES = ("sqlite://", "sqlite+pysqlite://", "sqlite+aiosqlite://")
#: The SQLite URL scheme of what runs: pysqlite, on the loop's thread (``choreo.compat.sqlite_inline``).
SQLITE_DRIVER = "sqlite+pysqlite://"


def normalize_url(url: str) -> str:
    """The URL with the scheme of the driver that will run it.

    ``sqlite:///``, ``sqlite+pysqlite:///`` and ``sqlite+aiosqlite:///`` (the spelling the
    settings have always used, kept as a contract) all become ``sqlite+pysqlite:///``: SQLite
    runs on pysqlite through ``choreo.compat.sqlite_inline``, never on aiosqlite.
    ``postgres://`` and ``postgresql://`` become ``postgresql+asyncpg://``.
    """
    for scheme in SQLITE_SCHEMES:
        if url.startswith(scheme):
            return SQLITE_DRIVER + url[len(scheme) :]
    if url.startswith(("postgres://", "postgresql://")):
        return "postgresql+asyncpg://" + url.split("://", 1)[1]
    return url


#: ``sslmode`` values of libpq, which asyncpg implements (``ssl`` in the URL is the same parameter).
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
#: libpq's TLS parameters a PostgreSQL URL may carry (files on the service's filesystem).
TLS_FILE_PARAMETERS = ("sslrootcert", "sslcert", "sslkey", "sslcrl")


def postgres_tls(url: str) -> tuple[URL, dict[str, Any]]:
    """A PostgreSQL URL without its TLS parameters, and the asyncpg arguments that carry them.

    The URL may say ``ssl=`` (or libpq's ``sslmode=``) with one of ``SSL_MODES``, and name
    the CA that signed the server's certificate (``sslrootcert=``), a client certificate and
    key (``sslcert=``, ``sslkey=``) and a revocation list (``sslcrl=``), e.g.
    ``postgresql+asyncpg://u:p@db:5432/app?ssl=verify-full&sslrootcert=/etc/tls/ca.crt``.
    SQLAlchemy hands every query parameter to ``asyncpg.connect`` as a keyword, which has none
    for the files, so they travel in asyncpg's own libpq-style ``dsn`` argument instead (its
    host, user and database come from the URL): asyncpg builds and checks the TLS context.
    Without ``sslrootcert``, asyncpg reads ``PGSSLROOTCERT`` or ``~/.postgresql/root.crt``.

    Raises:
        ValueError: An unknown mode, both ``ssl`` and ``sslmode``, or a file that cannot be read.
    """
    parsed = make_url(url)
    query = dict(parsed.query)
    if "ssl" in query and "sslmode" in query:
        raise ValueError("the database URL sets both ssl= and sslmode=; keep one")
    mode = query.pop("ssl", None) or query.pop("sslmode", None)
    files = {key: query.pop(key) for key in TLS_FILE_PARAMETERS if key in query}
    if mode is None and not files:
        return parsed, {}
    if mode is not None and (not isinstance(mode, str) or mode not in SSL_MODES):
        raise ValueError(f"ssl={mode!r} in the database URL: must be one of {', '.join(SSL_MODES)}")
    for key, path in files.items():
        try:
            Path(str(path)).open("rb").close()
        except OSError as exc:
            raise ValueError(f"{key}={path!r} in the database URL: cannot read it ({exc.strerror})") from None
    params = {"sslmode": mode, **files} if mode else files
    return parsed.set(query=query), {"dsn": "postgresql://?" + urlencode(params)}


#: SQLite ``synchronous`` values a service may choose (``ServiceSettings.sqlite_synchronous``).
SQLITE_SYNCHRONOUS = ("FULL", "NORMAL")


def make_engine(
    url: str, *, writer: bool = True, pool_size: int = 5, synchronous: str = "FULL"
) -> AsyncEngine:
    """Creates the engine for a service's own database.

    Args:
        url: SQLAlchemy URL; SQLite files get their folder created.
        writer: On SQLite, start every transaction with ``BEGIN IMMEDIATE`` so two
            read-then-write transactions never deadlock on lock upgrade. Readers
            pass ``False`` and keep WAL's concurrent snapshot reads.
        pool_size: Connections kept open (PostgreSQL, and SQLite readers).
        synchronous: SQLite's ``synchronous`` (one of ``SQLITE_SYNCHRONOUS``). ``FULL``:
            a commit is on disk (the WAL fsynced) before it returns, so the ack or
            reply that follows it survives a power cut. ``NORMAL``: a power cut or OS
            crash may roll back the last commits (never corrupts the file), while
            their acks and replies have already gone out.
    """
    if synchronous not in SQLITE_SYNCHRONOUS:
        raise ValueError(f"synchronous must be one of {SQLITE_SYNCHRONOUS}, not {synchronous!r}")
    url = normalize_url(url)
    if not is_sqlite(url):
        plain, tls = postgres_tls(url)
        return create_async_engine(
            plain, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True, connect_args=tls
        )
    path = url.split(":///", 1)[1] if ":///" in url else ""
    # Statements run on the loop's thread, without greenlets (choreo.compat.sqlite_inline). A
    # writer engine has one connection, so the process's write transactions take turns on the
    # asyncio side and never wait on SQLite's lock, which would block the loop.
    connections = 1 if writer else pool_size
    # The pool may close a connection from a finalizer on another thread.
    connect_args = {"timeout": 30.0, "check_same_thread": False}
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        # pool_timeout=0: InlineEngine only checks out a connection the pool has free, so
        # a checkout that would wait is a misuse and fails at once instead of blocking the loop.
        sync_engine = create_engine(
            url, pool_size=connections, max_overflow=0, pool_timeout=0, connect_args=connect_args
        )
    else:
        # One in-memory database: every checkout shares its single connection.
        connections = 1
        sync_engine = create_engine(url, poolclass=StaticPool, connect_args=connect_args)
    engine: AsyncEngine = InlineEngine(sync_engine, connections)

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control away from the driver so BEGIN is ours to issue.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        # FULL: the WAL is fsynced at every commit, before its ack or reply goes out.
        cur.execute(f"PRAGMA synchronous={synchronous}")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        read_only = conn.get_execution_options().get(READ_ONLY, False)
        # On the driver's own cursor: BEGIN needs none of the statement machinery, and this
        # runs for every transaction of every service.
        cursor = conn.connection.cursor()
        try:
            cursor.execute("BEGIN IMMEDIATE" if writer and not read_only else "BEGIN")
        finally:
            cursor.close()

    return engine


async def create_tables(engine: AsyncEngine, tables: Sequence[Table]) -> None:
    """Creates the given tables if missing (only these), never changing an existing one.

    Not for a service's own database: its tables are revised by ``choreo.schema``
    (Alembic). This is for stores that are rebuilt rather than migrated, such as the
    gateway's read model, and for tests.
    """
    async with engine.begin() as conn:
        await lock_schema(conn)
        await conn.run_sync(lambda sync: tables[0].metadata.create_all(sync, tables=list(tables)))


#: Key of the PostgreSQL advisory lock that serializes schema changes of one database ("choreo").
SCHEMA_LOCK_KEY = 0x63686F72656F


async def lock_schema(conn: AsyncConnection) -> None:
    """Holds the database's schema lock until ``conn``'s transaction ends.

    Replicas that start together on one PostgreSQL database take turns creating or
    upgrading tables (two concurrent ``CREATE TABLE`` of one name fail). On SQLite the
    writer's ``BEGIN IMMEDIATE`` already serializes them.
    """
    if conn.dialect.name == "postgresql":
        await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK_KEY})


async def durability_settings(conn: AsyncConnection) -> dict[str, str]:
    """What the database does on commit, for benchmark reports."""
    if conn.dialect.name == "sqlite":
        mode = (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar()
        sync = (await conn.exec_driver_sql("PRAGMA synchronous")).scalar()
        names = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
        return {"engine": "sqlite", "journal_mode": str(mode), "synchronous": names.get(int(sync or 0), "?")}
    commit = (await conn.exec_driver_sql("SHOW synchronous_commit")).scalar()
    return {"engine": conn.dialect.name, "synchronous_commit": str(commit)}


#: Built once: the statement of ``lock_key``.
_LOCK_KEY = text("SELECT pg_advisory_xact_lock(:key)")


def key_lock_id(namespace: str, key: str) -> int:
    """A stable signed 64-bit number for ``(namespace, key)``: the id of its advisory lock.

    blake2b, not ``hash()``: every process and every release must compute the same id
    for the same key (Python's string hash is salted per process). The namespace is
    length-prefixed so that ``("ab", "c")`` and ``("a", "bc")`` never share a lock.
    """
    digest = hashlib.blake2b(f"{len(namespace)}:{namespace}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


async def lock_key(conn: AsyncConnection, namespace: str, key: str) -> None:
    """Holds a lock on ``key`` (within ``namespace``) until ``conn``'s transaction ends.

    For read-then-write handlers that must not interleave on one key (a booking's charge
    and its cancellation): the second transaction waits until the first commits, then
    reads what it wrote. PostgreSQL: ``pg_advisory_xact_lock`` on ``key_lock_id``; two
    keys may share an id (a 64-bit hash), which only makes them wait for each other. SQLite:
    nothing to do, its writers are serialised already (``BEGIN IMMEDIATE``, ``make_engine``).
    """
    if conn.dialect.name == "postgresql":
        await conn.execute(_LOCK_KEY, {"key": key_lock_id(namespace, key)})
