"""Bulk writes: statements built with SQLAlchemy Core, compiled once, run with ``executemany``.

Replay speed is bounded by per-row Python work. A Core statement executed
with a list of dicts spends most of its time turning every dict into driver
parameters; here the statement (with the dialect's own upsert syntax) is
compiled once per engine, and each object becomes the driver's parameter
tuple with one C-level ``attrgetter`` call.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from operator import attrgetter
from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import Executable


def dialect_insert(table: Table, dialect: str) -> Any:
    """``INSERT`` with the dialect's ``ON CONFLICT`` support (PostgreSQL or SQLite)."""
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


def upsert(table: Table, dialect: str, key: str) -> Executable:
    """Insert, or replace every other column of the row with the same ``key``."""
    ins = dialect_insert(table, dialect)
    return ins.on_conflict_do_update(  # type: ignore[no-any-return]
        index_elements=[key], set_={c.name: ins.excluded[c.name] for c in table.columns if c.name != key}
    )


def insert_new(table: Table, dialect: str, key: str) -> Executable:
    """Insert, skipping rows whose ``key`` already exists."""
    return dialect_insert(table, dialect).on_conflict_do_nothing(index_elements=[key])  # type: ignore[no-any-return]


class BulkStatement:
    """A compiled statement whose parameters are read off objects' attributes.

    Args:
        statement: The Core statement (every column a bound parameter).
        dialect: The engine's dialect.
        attributes: Column -> attribute path where they differ (e.g. ``status.value``).
    """

    def __init__(
        self, statement: Executable, dialect: Dialect, attributes: Mapping[str, str] | None = None
    ) -> None:
        compiled = statement.compile(dialect=dialect)  # type: ignore[attr-defined]
        keys: Sequence[str] | None = compiled.positiontup
        if not keys or len(keys) < 2:
            raise ValueError(
                "BulkStatement needs a dialect with positional parameters and two columns or more"
            )
        names = [(attributes or {}).get(k, k) for k in keys]
        self.sql: str = compiled.string
        self._params = attrgetter(*names)

    async def execute(self, conn: AsyncConnection, objects: Sequence[Any]) -> None:
        """Runs the statement once per object, in one ``executemany``."""
        if objects:
            await conn.exec_driver_sql(self.sql, [self._params(o) for o in objects])
