"""Schema revisions: a service database is upgraded, adopted, checked and serialized (choreo.schema)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, insert, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from booking.migrations import MIGRATIONS as BOOKING
from booking.migrations.versions import booking_0001_baseline as booking_baseline
from booking.tables import bookings
from choreo.db import create_tables, make_engine, read_only
from choreo.migrations.versions import choreo_0001_baseline as runtime_baseline
from choreo.outbox import outbox_table
from choreo.schema import (
    RUNTIME,
    Migrations,
    SchemaRefused,
    check,
    model_differences,
    owners_of,
    prepare_schema,
    upgrade,
)
from payment.migrations import MIGRATIONS as PAYMENT

HEADS = {"choreo_0003", "booking_0002"}
#: The newest revision of each service branch tested here.
NEWEST = {"booking": "booking_0002", "payment": "payment_0002"}


@pytest.fixture
async def engine(database_url: str) -> AsyncEngine:
    engine = make_engine(database_url)
    yield engine  # type: ignore[misc]
    await engine.dispose()


async def versions(engine: AsyncEngine) -> set[str]:
    async with read_only(engine) as conn:
        return {r[0] for r in await conn.execute(text("SELECT version_num FROM alembic_version"))}


def booking_row(booking_id: str) -> dict[str, object]:
    return {
        "booking_id": booking_id,
        "user_id": "u1",
        "amount_cents": 1200,
        "currency": "EUR",
        "status": "PENDING",
        "correlation_id": "c1",
        "payment_id": "",
        "cancellation_reason": "",
        "idempotency_key": None,
        "request_hash": "",
        "created_at_us": 1,
        "updated_at_us": 1,
    }


@pytest.mark.parametrize("service", [BOOKING, PAYMENT], ids=["booking", "payment"])
async def test_the_migrated_schema_is_the_models_schema(engine: AsyncEngine, service: Migrations) -> None:
    # The guard against a table class changed without a revision: the revisions must
    # build exactly the tables the models describe, on SQLite and on PostgreSQL.
    await upgrade(engine, owners_of(service))
    assert await model_differences(engine, owners_of(service)) == []
    assert await versions(engine) == {"choreo_0003", NEWEST[service.branch]}


async def test_a_model_changed_without_a_revision_is_a_difference(engine: AsyncEngine) -> None:
    await upgrade(engine, owners_of(BOOKING))
    changed = bookings.to_metadata(MetaData())
    changed.append_column(Column("note", String(200), nullable=True))
    edited = Migrations("booking", BOOKING.versions, (changed,))
    differences = await model_differences(engine, owners_of(edited))
    assert [d[0] for d in differences] == ["add_column"]


async def test_a_second_upgrade_runs_nothing(engine: AsyncEngine) -> None:
    before = await upgrade(engine, owners_of(BOOKING))
    again = await upgrade(engine, owners_of(BOOKING))
    assert before.current == frozenset() and again.current == frozenset(HEADS) and again.up_to_date


async def test_a_database_made_by_create_all_is_adopted_with_its_rows(engine: AsyncEngine) -> None:
    # What every database made before migrations looks like: the baseline's tables, no alembic_version.
    before = MetaData()
    runtime_baseline.define_tables(before)
    booking_baseline.define_tables(before)
    async with engine.begin() as conn:
        await conn.run_sync(before.create_all)
    async with engine.begin() as conn:
        await conn.execute(insert(before.tables["bookings"]), [booking_row("b1")])

    await prepare_schema(engine, BOOKING, mode="auto", service="booking", setting="BOOKING_MIGRATE")

    assert await versions(engine) == HEADS
    async with read_only(engine) as conn:
        assert (await conn.execute(select(bookings.c.booking_id))).scalars().all() == ["b1"]
    assert await model_differences(engine, owners_of(BOOKING)) == []


async def test_tables_that_differ_from_the_baseline_are_not_adopted(engine: AsyncEngine) -> None:
    other = MetaData()
    Table("bookings", other, Column("booking_id", String(64), primary_key=True))
    async with engine.begin() as conn:
        await conn.run_sync(other.create_all)
    with pytest.raises(SchemaRefused, match="differ from revision booking_0001"):
        await upgrade(engine, owners_of(BOOKING))
    await create_tables(engine, [outbox_table])  # the inbox is missing
    with pytest.raises(SchemaRefused, match=r"not \['inbox'\]"):
        await upgrade(engine, owners_of(None))


async def test_check_mode_refuses_a_database_behind_and_names_what_to_do(engine: AsyncEngine) -> None:
    with pytest.raises(SchemaRefused) as refused:
        await prepare_schema(engine, BOOKING, mode="check", service="booking", setting="BOOKING_MIGRATE")
    message = str(refused.value)
    assert "\n" not in message
    assert "run `python -m choreo.migrate booking` first, or set BOOKING_MIGRATE=auto" in message
    assert "no revision" in message
    with pytest.raises(DBAPIError):  # check changed nothing
        await versions(engine)

    await upgrade(engine, owners_of(BOOKING))
    await prepare_schema(engine, BOOKING, mode="check", service="booking", setting="BOOKING_MIGRATE")


async def test_a_schema_from_a_newer_release_is_used_as_it_is(
    engine: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    # A rolling update: the Job (or a new pod) migrated, old pods still start.
    await upgrade(engine, owners_of(BOOKING))
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE alembic_version SET version_num = 'booking_0099' WHERE version_num = 'booking_0002'")
        )
    with caplog.at_level(logging.WARNING, logger="choreo.schema"):
        await prepare_schema(engine, BOOKING, mode="check", service="booking", setting="BOOKING_MIGRATE")
        await prepare_schema(engine, BOOKING, mode="auto", service="booking", setting="BOOKING_MIGRATE")
    assert caplog.text.count("does not know (booking_0099)") == 2
    assert (await check(engine, owners_of(BOOKING))).ahead


async def test_a_database_shared_with_another_service_is_refused(engine: AsyncEngine) -> None:
    await upgrade(engine, owners_of(PAYMENT))
    with pytest.raises(SchemaRefused, match=r"other services' tables \(payment_0002\)"):
        await upgrade(engine, owners_of(BOOKING))
    with pytest.raises(SchemaRefused, match="each service needs a database of its own"):
        await prepare_schema(engine, BOOKING, mode="check", service="booking", setting="BOOKING_MIGRATE")


WIDGETS_0001 = """
import sqlalchemy as sa
from alembic import op

revision = "demo_0001"
down_revision = None
branch_labels = ("demo",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "widgets",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(32), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("widgets")
"""

WIDGETS_0002 = """
import sqlalchemy as sa
from alembic import op

revision = "demo_0002"
down_revision = "demo_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("widgets") as batch:
        batch.alter_column(
            "name", new_column_name="title", existing_type=sa.String(32), existing_nullable=False
        )
        batch.add_column(sa.Column("colour", sa.String(16), nullable=False, server_default="red"))


def downgrade() -> None:
    with op.batch_alter_table("widgets") as batch:
        batch.drop_column("colour")
        batch.alter_column(
            "title", new_column_name="name", existing_type=sa.String(32), existing_nullable=False
        )
"""


async def test_a_rename_and_an_added_column_keep_the_rows_and_inserts_work(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    widgets = Table(
        "widgets",
        MetaData(),
        Column("id", Integer, primary_key=True),
        Column("title", String(32), nullable=False),
        Column("colour", String(16), nullable=False, server_default="red"),
    )
    demo = Migrations("demo", tmp_path / "versions", (widgets,))
    demo.versions.mkdir()
    (demo.versions / "demo_0001_widgets.py").write_text(WIDGETS_0001)
    await upgrade(engine, owners_of(demo))
    async with engine.begin() as conn:
        await conn.execute(text("INSERT INTO widgets (id, name) VALUES (1, 'left'), (2, 'right')"))

    # The code of the next release, on the schema of the previous one: the insert breaks.
    with pytest.raises(DBAPIError):
        async with engine.begin() as conn:
            await conn.execute(insert(widgets), [{"id": 3, "title": "up", "colour": "blue"}])

    (demo.versions / "demo_0002_rename_name_add_colour.py").write_text(WIDGETS_0002)
    state = await upgrade(engine, owners_of(demo))
    assert state.current == {"choreo_0003", "demo_0001"}

    async with engine.begin() as conn:
        await conn.execute(insert(widgets), [{"id": 3, "title": "up", "colour": "blue"}])
    async with read_only(engine) as conn:
        rows = (await conn.execute(select(widgets).order_by(widgets.c.id))).all()
    assert [tuple(r) for r in rows] == [(1, "left", "red"), (2, "right", "red"), (3, "up", "blue")]
    assert await model_differences(engine, owners_of(demo)) == []
    assert await versions(engine) == {"choreo_0003", "demo_0002"}


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_replicas_starting_together_upgrade_once(database_url: str) -> None:
    engines = [make_engine(database_url) for _ in range(4)]
    try:
        # Without the lock they block one another on the same new tables (or fail on them).
        async with asyncio.timeout(60):
            states = await asyncio.gather(*(upgrade(e, owners_of(BOOKING)) for e in engines))
        # One replica ran the revisions; the others waited on the lock and found them applied.
        assert sorted(len(s.current) for s in states) == [0, 2, 2, 2]
        assert await versions(engines[0]) == HEADS
        assert await model_differences(engines[0], owners_of(BOOKING)) == []
    finally:
        for e in engines:
            await e.dispose()


def test_the_runtime_branch_owns_the_outbox_and_the_inbox() -> None:
    assert RUNTIME.branch == "choreo"
    assert {t.name for t in RUNTIME.tables} == {"outbox", "inbox", "delivery_attempts", "recovery_state"}
    assert (RUNTIME.versions / "choreo_0001_baseline.py").is_file()
