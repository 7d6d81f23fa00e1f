"""Revisions of the booking service's tables: Alembic branch ``booking``."""
