"""Alembic's environment for a service database, always driven by ``choreo.schema``.

The caller (``choreo.schema``) hands over an open connection, inside its own
transaction, and the metadata to compare with in ``config.attributes``; nothing
is read from an ini file and no engine is created here.
"""

from __future__ import annotations

from alembic import context

from choreo.schema import render_item

config = context.config
if context.is_offline_mode():
    raise SystemExit("choreo migrations run against a database; offline (--sql) mode is not supported")

context.configure(
    connection=config.attributes["connection"],
    target_metadata=config.attributes["metadata"],
    include_object=config.attributes["include_object"],
    # SQLite alters a table by copying it; batch mode does that there and plain ALTERs elsewhere.
    render_as_batch=True,
    compare_type=True,
    render_item=render_item,
)
with context.begin_transaction():
    context.run_migrations()
