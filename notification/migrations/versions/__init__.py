"""Revisions of the notification service's tables: Alembic branch ``notification``."""
