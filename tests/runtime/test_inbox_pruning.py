"""The inbox forgets handled facts after the retention, in small batches; the service runs the pruner."""

from __future__ import annotations

from sqlalchemy import insert

from choreo.db import now_us
from choreo.inbox import InboxPruner, already_processed, inbox_table
from choreo.runtime import Runtime
from tests.support import row_count

DAY_US = 24 * 3600 * 1_000_000


async def _inbox_size(rt: Runtime) -> int:
    return await row_count(rt.engine, inbox_table)


async def test_rows_older_than_the_retention_are_pruned_in_batches(rt: Runtime) -> None:
    now = now_us()
    old = [
        {"consumer": "c", "event_id": f"old-{i}", "processed_at_us": now - 8 * DAY_US, "stream_sequence": i}
        for i in range(2500)
    ]
    recent = [
        {"consumer": "c", "event_id": f"new-{i}", "processed_at_us": now - DAY_US, "stream_sequence": i}
        for i in range(10)
    ]
    async with rt.engine.begin() as conn:
        await conn.execute(insert(inbox_table), old + recent)
    pruner = InboxPruner(rt.engine, retention_seconds=7 * 24 * 3600, batch_size=1000, pause=0)
    assert await pruner.prune() == 2500
    assert await _inbox_size(rt) == 10
    async with rt.engine.connect() as conn:
        known = await already_processed(conn, "c", ["old-1", "new-1"])
        await conn.rollback()
    assert known == {"new-1"}, "within the retention a duplicate is still recognised"
    assert await pruner.prune() == 0


async def test_the_service_runs_an_inbox_pruner_with_the_configured_retention(rt: Runtime) -> None:
    service = rt.service([])
    pruners = [c for c in service.components if isinstance(c, InboxPruner)]
    assert len(pruners) == 1
    assert pruners[0]._retention_us == int(rt.settings.inbox_retention_seconds * 1e6)
