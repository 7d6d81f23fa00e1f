"""``INSERT ... ON CONFLICT`` for the two databases a service may use (SQLite, PostgreSQL).

SQLAlchemy Core has the construct only in each dialect's own ``insert``, so a
statement that must run on either is built per dialect name (``engine.dialect.name``).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
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
