"""Revisions of the payment service's tables: Alembic branch ``payment``."""
