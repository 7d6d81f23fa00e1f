"""The analytics service's tables and their revisions (``versions/``, Alembic branch ``analytics``)."""

from pathlib import Path

from analytics.settings import AnalyticsSettings
from analytics.tables import analytics_bookings
from choreo.schema import Migrations

MIGRATIONS = Migrations("analytics", Path(__file__).parent / "versions", (analytics_bookings,))

#: Where ``python -m choreo.migrate analytics`` reads the database URL from.
SETTINGS = AnalyticsSettings
