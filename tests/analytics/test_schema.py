"""Analytics' revisions build exactly the table its model describes, on SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import inspect

from analytics.migrations import MIGRATIONS
from choreo.db import make_engine
from choreo.schema import model_differences, owners_of, upgrade


async def test_the_migrated_schema_is_the_models_schema(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        await upgrade(engine, owners_of(MIGRATIONS))
        assert await model_differences(engine, owners_of(MIGRATIONS)) == []
        async with engine.connect() as conn:
            indexes = await conn.run_sync(lambda c: inspect(c).get_indexes("analytics_bookings"))
    finally:
        await engine.dispose()
    # The window of every query is a range of created_at_us.
    assert [i["column_names"] for i in indexes] == [["created_at_us"]]
