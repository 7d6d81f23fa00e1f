"""The inventory service's tables and their revisions (``versions/``, Alembic branch ``inventory``)."""

from pathlib import Path

from choreo.schema import Migrations
from inventory.settings import InventorySettings
from inventory.tables import reservations, resources

MIGRATIONS = Migrations("inventory", Path(__file__).parent / "versions", (resources, reservations))

#: Where ``python -m choreo.migrate inventory`` reads the database URL from.
SETTINGS = InventorySettings
