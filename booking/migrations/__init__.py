"""The booking service's tables and their revisions (``versions/``, Alembic branch ``booking``)."""

from pathlib import Path

from booking.settings import BookingSettings
from booking.tables import bookings
from choreo.schema import Migrations

MIGRATIONS = Migrations("booking", Path(__file__).parent / "versions", (bookings,))

#: Where ``python -m choreo.migrate booking`` reads the database URL from.
SETTINGS = BookingSettings
