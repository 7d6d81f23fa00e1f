"""Several relays on one database: each row is published by one of them, once, in order per workflow."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from nats.js import JetStreamContext
from sqlalchemy import select, update

from choreo.bus import ensure_stream
from choreo.db import is_sqlite, make_engine, normalize_url
from choreo.envelope import H_MSG_ID
from choreo.outbox import OutboxRelay, outbox_table
from choreo.outbox_store import add_to_outbox, claim
from choreo.runtime import Runtime
from choreo.schema import prepare_schema
from tests.runtime.harness import (
    envelope_for,
    outbox_empty,
    running,
    stream_messages,
)
from tests.runtime.test_outbox import commit_events
from tests.runtime.test_outbox_poison import fact
from tests.streams import BOOKING, BOOKING_STREAM, PAYMENT_STREAM
from tests.support import eventually, stream_count

WORKFLOWS = 60
FACTS_PER_WORKFLOW = 5


async def _without_msg_ids(rt: Runtime) -> None:
    """Drops Nats-Msg-Id from the queued rows, so JetStream's de-duplication cannot hide a double publish."""
    async with rt.engine.begin() as conn:
        rows = (await conn.execute(select(outbox_table.c.id, outbox_table.c.headers))).all()
        for row in rows:
            headers = json.loads(row.headers)
            del headers[H_MSG_ID]
            await conn.execute(
                update(outbox_table).where(outbox_table.c.id == row.id).values(headers=json.dumps(headers))
            )


async def test_two_relays_publish_each_row_once_in_order_per_workflow(
    rt: Runtime, js: JetStreamContext, database_url: str
) -> None:
    facts = [fact(n, f"wf-{n % WORKFLOWS}") for n in range(WORKFLOWS * FACTS_PER_WORKFLOW)]
    for start in range(0, len(facts), 50):
        await commit_events(rt, facts[start : start + 50])
    await _without_msg_ids(rt)
    # PostgreSQL: two replicas, each with its engine. SQLite: one process is the only writer
    # (two processes on one file are not supported), so both relays share its writer engine.
    other_engine = rt.engine if is_sqlite(normalize_url(database_url)) else make_engine(database_url)
    relays = [
        OutboxRelay(engine, rt.nc.jetstream(), batch_size=20, poll_interval=0.05)
        for engine in (rt.engine, other_engine)
    ]
    try:
        async with running(*relays):
            await eventually(lambda: outbox_empty(rt.engine), timeout=20.0, message="outbox drained")
    finally:
        if other_engine is not rt.engine:
            await other_engine.dispose()
    stored = [m.headers["ce-id"] for m in await stream_messages(js, PAYMENT_STREAM) if m.headers]
    assert len(stored) == len(facts), f"{len(stored) - len(facts)} rows published twice"
    assert sorted(stored) == sorted(e.id for e in facts)
    for w in range(WORKFLOWS):
        mine = [e.id for e in facts if e.correlation_id == f"wf-{w}"]
        assert [i for i in stored if i in set(mine)] == mine, f"wf-{w} out of order"


async def test_a_restarted_relay_on_sqlite_publishes_what_its_killed_predecessor_claimed(
    js: JetStreamContext, tmp_path: Path
) -> None:
    """One process per SQLite file: the claims of the relay that was killed are the new one's own."""
    await ensure_stream(js, BOOKING)
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'relay.db'}")
    await prepare_schema(engine, None, mode="auto", service="choreo", setting="MIGRATE")
    try:
        async with engine.begin() as conn:
            await add_to_outbox(conn, [envelope_for(f"b{i}") for i in range(5)])
        async with engine.begin() as conn:  # claimed, then the process was SIGKILLed
            assert len(await claim(conn, 500, 30.0)) == 5
        relay = OutboxRelay(engine, js)
        task = asyncio.create_task(relay.run())
        try:
            await eventually(
                lambda: stream_count(js, BOOKING_STREAM), timeout=5, message="the rows published"
            )
            await eventually(lambda: outbox_empty(engine), timeout=5, message="the outbox emptied")
        finally:
            relay.stop()
            await task
        assert await stream_count(js, BOOKING_STREAM) == 5
    finally:
        await engine.dispose()
