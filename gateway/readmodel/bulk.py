"""Bulk writes: statements built with SQLAlchemy Core, compiled once, run with ``executemany``.

Replay speed is bounded by per-row Python work. A Core statement executed
with a list of dicts spends most of its time turning every dict into driver
parameters; here the statement (with the dialect's own upsert syntax, see
``choreo.upserts``) is compiled once per engine, and each object becomes the
driver's parameter tuple with one C-level ``attrgetter`` call.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from operator import attrgetter
from typing import Any

from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import Executable


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
