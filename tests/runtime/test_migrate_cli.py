"""``python -m choreo.migrate``: the migration Job, the check, new revisions; a pod that refuses to start."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from pathlib import Path

import pytest
from sqlalchemy import Column, MetaData, String
from sqlmodel.sql.sqltypes import AutoString

from booking.migrations import MIGRATIONS as BOOKING
from booking.tables import bookings
from choreo.db import make_engine
from choreo.migrate import new_revision, next_revision_id
from choreo.schema import Migrations, model_differences, owners_of, upgrade


async def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_the_job_upgrades_and_the_check_tells_behind_from_current(database_url: str) -> None:
    check = ("-m", "choreo.migrate", "booking", "--database-url", database_url, "--check")
    code, out, _ = await run(*check)
    assert (code, out.strip()) == (
        1,
        "booking: schema at no revision (empty, or made before migrations); "
        "this release needs booking_0002, choreo_0003",
    )
    # As the Job runs it: the URL from the service's own settings.
    code, out, err = await run("-m", "choreo.migrate", "booking", env={"BOOKING_DATABASE_URL": database_url})
    assert code == 0, err
    assert "now at booking_0002, choreo_0003" in out
    code, out, _ = await run(*check)
    assert code == 0, out


async def test_a_pod_in_check_mode_refuses_to_start_on_a_database_behind(tmp_path: Path) -> None:
    env = {
        "BOOKING_MIGRATE": "check",
        "BOOKING_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'booking.db'}",
        # Never reached: the schema is looked at before NATS.
        "BOOKING_NATS_URL": "nats://127.0.0.1:1",
        "BOOKING_HEALTH_PORT": "0",
        "BOOKING_LOG_FORMAT": "text",
    }
    code, _, err = await run("-m", "booking", env=env)
    assert code == 1
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        "booking: database schema is at no revision (empty, or made before migrations), this release "
        "needs booking_0002, choreo_0003: run `python -m choreo.migrate booking` first, or set "
        "BOOKING_MIGRATE=auto"
    )


def test_revision_ids_count_up_within_their_branch() -> None:
    assert next_revision_id("booking", ["booking_0001", "choreo_0001", "choreo_0007"]) == "booking_0002"
    assert next_revision_id("payment", []) == "payment_0001"


async def test_a_new_revision_is_generated_from_the_changed_model(tmp_path: Path, database_url: str) -> None:
    versions = tmp_path / "versions"
    shutil.copytree(BOOKING.versions, versions)
    changed = bookings.to_metadata(MetaData())
    changed.append_column(Column("note", String(200), nullable=True))
    # The models' own string type comes out as a plain sa.String: revisions need no sqlmodel.
    changed.append_column(Column("channel", AutoString(16), nullable=True))
    edited = Migrations("booking", versions, (changed,))
    engine = make_engine(database_url)
    try:
        await upgrade(engine, owners_of(edited))
        assert await model_differences(engine, owners_of(edited)) != []

        path = await asyncio.to_thread(new_revision, edited, "add bookings.note")

        assert path is not None and path.name == "booking_0003_add_bookings_note.py"
        script = path.read_text()
        assert "down_revision: str | Sequence[str] | None = 'booking_0002'" in script
        assert "batch_op.add_column(sa.Column('note', sa.String(length=200)" in script
        assert "batch_op.add_column(sa.Column('channel', sa.String(length=16)" in script
        assert "sqlmodel" not in script
        state = await upgrade(engine, owners_of(edited))
        assert state.current == {"booking_0002", "choreo_0003"}
        assert await model_differences(engine, owners_of(edited)) == []
        assert await asyncio.to_thread(new_revision, edited, "nothing new") is None
    finally:
        await engine.dispose()


@pytest.mark.parametrize("service", ["booking", "payment", "choreo"])
async def test_every_branch_matches_its_models(service: str) -> None:
    # What a developer runs after changing a table class; here it must find nothing to write.
    code, out, err = await run("-m", "choreo.migrate", service, "--revision", "anything changed?")
    assert (code, out.strip()) == (0, f"{service}: the models match the revisions; nothing to write"), err
