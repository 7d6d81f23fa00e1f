"""The notification service's tables and their revisions (``versions/``, Alembic branch ``notification``)."""

from pathlib import Path

from choreo.schema import Migrations
from notification.settings import NotificationSettings
from notification.tables import bookings, notifications

MIGRATIONS = Migrations("notification", Path(__file__).parent / "versions", (bookings, notifications))

#: Where ``python -m choreo.migrate notification`` reads the database URL from.
SETTINGS = NotificationSettings
