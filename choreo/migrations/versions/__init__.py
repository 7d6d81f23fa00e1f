"""Revisions of the runtime's tables (outbox, inbox): Alembic branch ``choreo``."""
