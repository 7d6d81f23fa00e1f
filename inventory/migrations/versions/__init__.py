"""Revisions of the inventory service's tables: Alembic branch ``inventory``."""
