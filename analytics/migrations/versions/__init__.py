"""Revisions of the analytics service's tables: Alembic branch ``analytics``."""
