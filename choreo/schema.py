"""A service database's schema: Alembic revisions, applied at start-up or only checked.

Tables belong to an owner: the runtime owns the outbox and the inbox, a service
its own tables. Each owner keeps its revisions in a folder of its own, as an
Alembic branch labelled with its name (``choreo/migrations/versions``, branch
``choreo``; ``booking/migrations/versions``, branch ``booking``), and a service's
database holds the heads of the runtime's branch and its own in one
``alembic_version`` table.

``prepare_schema`` runs before a service touches its database:

- ``auto``: upgrades to the heads, in one transaction; on PostgreSQL under an
  advisory lock, so replicas starting together take turns and the later ones
  find nothing left to do (SQLite's ``BEGIN IMMEDIATE`` does the same).
- ``check``: refuses to start while the database is behind (the migration Job,
  ``python -m choreo.migrate SERVICE``, upgrades it).

A database that ``create_all`` made before revisions existed has the tables but
no ``alembic_version``: when its tables match an owner's baseline revision
exactly, that revision is stamped (adopted) and the later ones run; when they
differ, start-up stops rather than guess.

A database that a newer release already migrated (revisions this code does not
know) is used as it is, with a warning: in a rolling update the old pods run
on the new schema for a while, which is why a revision must keep the previous
release working (add, then remove in a later release; see docs/migrations.md).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import Connection, MetaData, Table, inspect
from sqlalchemy.ext.asyncio import AsyncEngine

from choreo.attempts import attempts_table
from choreo.db import lock_schema, read_only
from choreo.inbox import inbox_table
from choreo.outbox import outbox_table
from choreo.recovery import recovery_state_table

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

log = logging.getLogger(__name__)
# One line per Alembic plugin on every start-up tells an operator nothing.
logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)

#: Alembic's script directory (env.py, the revision template) for every service database.
SCRIPT_DIR = Path(__file__).parent / "migrations"

#: ``auto`` upgrades at start-up; ``check`` only verifies (a Job upgrades).
Mode = Literal["auto", "check"]


@dataclass(frozen=True)
class Migrations:
    """The tables one owner keeps in a service's database, and the folder of their revisions.

    Attributes:
        branch: Alembic branch label, also the prefix of the revision ids (``booking_0002``).
        versions: Folder of the revision scripts.
        tables: The models' tables, as the code expects them at the branch's head.
    """

    branch: str
    versions: Path
    tables: tuple[Table, ...]


#: The runtime's own tables, in every service database.
RUNTIME = Migrations(
    "choreo", SCRIPT_DIR / "versions", (outbox_table, inbox_table, attempts_table, recovery_state_table)
)


class SchemaRefused(Exception):
    """The database's schema is not one this process may use or upgrade.

    Retrying cannot help: an operator has to act, and the message (one line) says
    how. ``choreo.service.run_main`` stops the process with it, like invalid
    settings, without a traceback that would hide it.
    """


@dataclass(frozen=True)
class SchemaState:
    """Where a database's schema stands against the code's revisions.

    Attributes:
        current: The revisions in ``alembic_version`` (none before the first upgrade).
        heads: The revisions the code expects.
        unknown: Current revisions the code does not know: a newer release migrated.
    """

    current: frozenset[str]
    heads: frozenset[str]
    unknown: frozenset[str]

    @property
    def up_to_date(self) -> bool:
        return self.current == self.heads

    @property
    def ahead(self) -> bool:
        return bool(self.unknown)


def owners_of(migrations: Migrations | None) -> list[Migrations]:
    """The runtime's branch, plus the service's own if it has tables."""
    return [RUNTIME] if migrations is None else [RUNTIME, migrations]


def metadata_of(owners: Sequence[Migrations]) -> MetaData:
    """A metadata holding exactly the owners' tables (the models share one with other services)."""
    metadata = MetaData()
    for owner in owners:
        for table in owner.tables:
            table.to_metadata(metadata)
    return metadata


def only_tables_of(metadata: MetaData) -> Callable[[object, str | None, str, bool, object], bool]:
    """An Alembic ``include_object`` that ignores tables outside ``metadata`` (and ``alembic_version``)."""

    def include(_obj: object, name: str | None, type_: str, _reflected: bool, _compare_to: object) -> bool:
        return type_ != "table" or name in metadata.tables

    return include


def render_item(type_: str, obj: object, _context: object) -> str | Literal[False]:
    """Writes sqlmodel's string type as a plain ``sa.String`` in generated revisions.

    A revision must not depend on the models' library (``sqlmodel.sql.sqltypes.AutoString``
    would need an import the template lacks); the database sees a VARCHAR either way.
    """
    from sqlmodel.sql.sqltypes import AutoString

    if type_ == "type" and isinstance(obj, AutoString):
        return f"sa.String(length={obj.length!r})"
    return False


def alembic_config(conn: Connection, owners: Sequence[Migrations], metadata: MetaData) -> Config:
    """Alembic's configuration for ``owners``' branches on ``conn`` (read by ``migrations/env.py``)."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", _escape(str(SCRIPT_DIR)))
    config.set_main_option("path_separator", "os")
    config.set_main_option("version_locations", _escape(os.pathsep.join(str(o.versions) for o in owners)))
    config.attributes.update(connection=conn, metadata=metadata, include_object=only_tables_of(metadata))
    return config


def _escape(value: str) -> str:
    # Config values go through ConfigParser interpolation.
    return value.replace("%", "%%")


def schema_state(conn: Connection, script: ScriptDirectory, owners: Sequence[Migrations]) -> SchemaState:
    """Compares ``alembic_version`` on ``conn`` with the heads of ``script``.

    Raises:
        SchemaRefused: The database holds revisions of another owner's branch (by their
            ``<branch>_`` prefix): two services share it, and each would take the other's
            revisions for a newer release of its own and never migrate.
    """
    from alembic.runtime.migration import MigrationContext

    current = frozenset(MigrationContext.configure(conn).get_current_heads())
    unknown = current - {s.revision for s in script.walk_revisions()}
    branches = tuple(f"{o.branch}_" for o in owners)
    foreign = sorted(r for r in unknown if not r.startswith(branches))
    if foreign:
        raise SchemaRefused(
            f"the database holds revisions of other services' tables ({', '.join(foreign)}): "
            f"each service needs a database of its own"
        )
    return SchemaState(current, frozenset(script.get_heads()), unknown)


def upgrade_sync(conn: Connection, owners: Sequence[Migrations]) -> SchemaState:
    """Adopts a database made by ``create_all``, then upgrades it to the heads, in the caller's transaction.

    Returns:
        The state before the upgrade.
    """
    from alembic import command
    from alembic.script import ScriptDirectory

    config = alembic_config(conn, owners, metadata_of(owners))
    script = ScriptDirectory.from_config(config)
    state = schema_state(conn, script, owners)
    if state.ahead:
        _warn_ahead(state)
        return state
    if state.up_to_date:
        return state
    if not state.current:
        adopted = adoptable_baselines(conn, script)
        if adopted:
            command.stamp(config, adopted)
            log.info("adopted tables made before migrations: stamped %s", ", ".join(adopted))
    command.upgrade(config, "heads")
    log.info("database schema upgraded to %s", ", ".join(sorted(state.heads)))
    return state


def adoptable_baselines(conn: Connection, script: ScriptDirectory) -> list[str]:
    """The baseline revisions whose tables already exist, exactly as the baseline defines them.

    Raises:
        SchemaRefused: Some of a baseline's tables exist but not all, or they differ
            from it: a schema nobody can upgrade safely without a look.
    """
    existing = set(inspect(conn).get_table_names())
    adopted: list[str] = []
    for base in sorted(script.get_bases()):
        define = getattr(script.get_revision(base).module, "define_tables", None)
        if define is None:
            continue
        baseline = MetaData()
        define(baseline)
        present = set(baseline.tables) & existing
        if not present:
            continue
        missing = set(baseline.tables) - present
        if missing:
            raise SchemaRefused(
                f"database has tables {sorted(present)} but not {sorted(missing)} and no alembic_version: "
                f"not the schema of revision {base}; repair or recreate it before starting"
            )
        differences = compare_sync(conn, baseline)
        if differences:
            raise SchemaRefused(
                f"tables {sorted(present)} exist without alembic_version but differ from revision {base} "
                f"({differences[0]}...): adopt them by hand (alembic stamp) once they match"
            )
        adopted.append(base)
    return adopted


def compare_sync(conn: Connection, metadata: MetaData) -> list[Any]:
    """What differs between the tables of ``metadata`` and the database (Alembic's diff tuples).

    Empty when the database has exactly those tables, columns, types, indexes and
    constraints; tables outside ``metadata`` are not looked at.
    """
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    context = MigrationContext.configure(
        conn, opts={"compare_type": True, "include_object": only_tables_of(metadata)}
    )
    differences: list[Any] = compare_metadata(context, metadata)
    return differences


async def model_differences(engine: AsyncEngine, owners: Sequence[Migrations]) -> list[Any]:
    """What differs between the owners' models and the database: empty when the revisions match the code."""
    async with read_only(engine) as conn:
        differences: list[Any] = await conn.run_sync(compare_sync, metadata_of(owners))
        return differences


def check_sync(conn: Connection, owners: Sequence[Migrations]) -> SchemaState:
    """Where the schema on ``conn`` stands against the owners' revisions; changes nothing."""
    from alembic.script import ScriptDirectory

    config = alembic_config(conn, owners, metadata_of(owners))
    return schema_state(conn, ScriptDirectory.from_config(config), owners)


async def upgrade(engine: AsyncEngine, owners: Sequence[Migrations]) -> SchemaState:
    """Upgrades the database to the owners' heads; one caller at a time per database.

    Returns:
        The state before the upgrade.
    """
    async with engine.begin() as conn:
        # Held until this transaction ends: a second replica waits here, then finds the
        # revisions applied (READ COMMITTED reads the first one's commit) and runs none.
        await lock_schema(conn)
        state: SchemaState = await conn.run_sync(upgrade_sync, owners)
        return state


async def check(engine: AsyncEngine, owners: Sequence[Migrations]) -> SchemaState:
    """Where the database's schema stands against the owners' heads; changes nothing."""
    async with read_only(engine) as conn:
        state: SchemaState = await conn.run_sync(check_sync, owners)
        return state


async def prepare_schema(
    engine: AsyncEngine, migrations: Migrations | None, *, mode: Mode, service: str, setting: str
) -> None:
    """Brings the schema to the code's heads (``auto``) or makes sure it is there (``check``).

    Args:
        engine: The service's database.
        migrations: The service's own tables and revisions (None: it has only the runtime's).
        mode: ``auto`` or ``check``.
        service: The service's name, for the message.
        setting: The environment variable that sets ``mode``, for the message.

    Raises:
        SchemaRefused: ``check`` found the schema behind, or the tables cannot be adopted.
    """
    owners = owners_of(migrations)
    if mode == "auto":
        await upgrade(engine, owners)
        return
    state = await check(engine, owners)
    if state.up_to_date:
        return
    if state.ahead:
        _warn_ahead(state)
        return
    raise SchemaRefused(
        f"{service}: database schema is at {describe(state.current)}, this release needs "
        f"{describe(state.heads)}: run `python -m choreo.migrate {service}` first, or set {setting}=auto"
    )


def _warn_ahead(state: SchemaState) -> None:
    log.warning(
        "database schema has revisions this release does not know (%s): a newer release migrated it; "
        "starting on it as it is",
        ", ".join(sorted(state.unknown)),
    )


def describe(revisions: frozenset[str]) -> str:
    return ", ".join(sorted(revisions)) if revisions else "no revision (empty, or made before migrations)"
