"""Alembic's script directory for every service database, and the runtime's own revisions.

``env.py`` and ``script.py.mako`` serve every service: ``choreo.schema`` points
Alembic here with the service's connection and version folders. ``versions/``
holds the revisions of the runtime's tables (outbox, inbox), branch ``choreo``;
each service keeps its own in ``<service>/migrations/versions`` (see
docs/migrations.md).
"""
