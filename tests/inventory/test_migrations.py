"""Inventory's revisions build exactly the tables its models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import text

from choreo.db import make_engine
from choreo.schema import model_differences, owners_of, upgrade
from inventory.migrations import MIGRATIONS


async def test_the_migrated_schema_is_the_models_schema(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        await upgrade(engine, owners_of(MIGRATIONS))
        assert await model_differences(engine, owners_of(MIGRATIONS)) == []
        async with engine.connect() as conn:
            versions = {r[0] for r in await conn.execute(text("SELECT version_num FROM alembic_version"))}
        assert "inventory_0001" in versions
    finally:
        await engine.dispose()
