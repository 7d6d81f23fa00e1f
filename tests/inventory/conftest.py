"""Fixtures of the inventory tests: its schema (once per module), a handler harness on each database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from choreo.testing import HandlerHarness, handler_harness
from inventory.handlers import DURABLE, Inventory, routes
from inventory.migrations import MIGRATIONS
from tests.inventory.facts import inventory_database
from tests.support import prepared_schema

#: The default capacity of the harnesses' resources: small, so a few bookings sell one out.
DEFAULT_CAPACITY = 5


@pytest.fixture(scope="module")
def schema(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepared_schema(tmp_path_factory, MIGRATIONS, "inventory")


@pytest.fixture
async def h(database_url: str, schema: Path) -> AsyncIterator[HandlerHarness]:
    """Inventory's routes on a fresh database: SQLite (``handler_harness``), then PostgreSQL."""
    inventory = Inventory(DEFAULT_CAPACITY)
    if database_url.startswith("sqlite"):
        async with handler_harness(
            routes(inventory), consumer=DURABLE, schema=schema, source="inventory"
        ) as h:
            yield h
        return
    async with inventory_database(database_url, schema) as engine:
        yield HandlerHarness(engine, routes(inventory), consumer=DURABLE, source="inventory")
