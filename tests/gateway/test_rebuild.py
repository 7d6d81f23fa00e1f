"""The read model rebuilds itself by replay when it cannot be trusted (issue 8, defects 6 and 9).

- its schema version (``gateway.readmodel.tables.SCHEMA_VERSION``) differs from the code's;
- a stream it projects was deleted and re-created (or JetStream lost its data):
  the checkpoint belongs to the stream's old incarnation, and resuming from it
  would never project the new facts below it. Checked at start-up and whenever
  the feed re-opens its reader (the stream deleted under a running gateway).
"""

from __future__ import annotations

from typing import Any

from nats.js import JetStreamContext
from sqlalchemy import text

from choreo.bus import ensure_stream
from choreo.db import make_engine
from gateway.build import GatewayService
from gateway.readmodel.model import Status
from gateway.readmodel.tables import SCHEMA_VERSION
from tests.gateway.conftest import StartGateway, stop_gateway
from tests.gateway.test_projection import ensure_streams, snapshot, workflow_facts
from tests.streams import BOOKING, BOOKING_STREAM
from tests.support import eventually


async def execute(database_url: str, *statements: str) -> list[list[Any]]:
    """Runs SQL in one transaction; the rows of each statement (empty when it returns none)."""
    engine = make_engine(database_url)
    try:
        async with engine.begin() as conn:
            results = [await conn.execute(text(s)) for s in statements]
            return [list(r.all()) if r.returns_rows else [] for r in results]
    finally:
        await engine.dispose()


async def terminal(gateway: GatewayService, booking_id: str) -> bool:
    assert gateway.store is not None
    view = await gateway.store.get(booking_id)
    return view is not None and view.is_terminal


async def test_an_older_schema_version_is_rebuilt_to_the_same_rows(
    start_gateway: StartGateway, database_url: str, js: JetStreamContext
) -> None:
    await ensure_streams(js)
    await workflow_facts(js, "one")
    await workflow_facts(js, "two", declined=True, payment_first=True)
    gateway = await start_gateway(database_url)
    before = await snapshot(database_url)
    assert len(before["bookings"]) == 2 and len(before["trace_events"]) == 6
    assert before["read_model_meta"] == [("schema_version", str(SCHEMA_VERSION))]
    await stop_gateway(gateway)

    # Written by an older gateway: its rows cannot be trusted (here one is simply gone).
    await execute(
        database_url,
        f"UPDATE read_model_meta SET value = '{SCHEMA_VERSION - 1}'",
        "DELETE FROM bookings WHERE booking_id = 'two'",
    )
    rebuilt = await start_gateway(database_url)
    assert sum(f.applied for f in rebuilt.feeds) == 6, "not replayed from the start"
    assert await snapshot(database_url) == before


async def test_a_database_from_before_schema_versions_is_rebuilt(
    start_gateway: StartGateway, database_url: str, js: JetStreamContext
) -> None:
    await ensure_streams(js)
    await workflow_facts(js, "one")
    gateway = await start_gateway(database_url)
    before = await snapshot(database_url)
    await stop_gateway(gateway)
    await execute(database_url, "DROP TABLE read_model_meta", "DELETE FROM trace_events")
    await start_gateway(database_url)
    assert await snapshot(database_url) == before


async def test_a_stream_recreated_while_the_gateway_was_down_is_projected_from_its_start(
    start_gateway: StartGateway, database_url: str, js: JetStreamContext
) -> None:
    await ensure_streams(js)
    for booking_id in ("old-1", "old-2"):
        await workflow_facts(js, booking_id)
    gateway = await start_gateway(database_url)
    await stop_gateway(gateway)

    await js.delete_stream(BOOKING_STREAM)
    await ensure_stream(js, BOOKING)
    await workflow_facts(js, "reborn")  # BOOKING sequences 1 and 2, below the old checkpoint (4)
    again = await start_gateway(database_url)
    assert again.store is not None
    assert await terminal(again, "reborn"), "the facts below the old checkpoint were never projected"
    feed = next(f for f in again.feeds if f.stream == BOOKING_STREAM)
    assert feed.position == 2
    # What the read model learned from the lost stream's facts is kept.
    assert sorted(e.stream for e in await again.store.trace("wf-old-1")) == ["BOOKING", "BOOKING", "PAYMENT"]
    old = await again.store.get("old-1")
    assert old is not None and old.status is Status.CONFIRMED
    info = await js.stream_info(BOOKING_STREAM)
    assert info.created is not None
    rows = await execute(
        database_url, f"SELECT stream_created FROM checkpoints WHERE stream = '{BOOKING_STREAM}'"
    )
    assert rows[0][0][0] == info.created.isoformat()


async def test_a_stream_recreated_under_a_running_gateway_is_projected_from_its_start(
    start_gateway: StartGateway, database_url: str, js: JetStreamContext
) -> None:
    await ensure_streams(js)
    for booking_id in ("old-1", "old-2"):
        await workflow_facts(js, booking_id)
    gateway = await start_gateway(database_url, projection_heartbeat_seconds=0.2)
    assert gateway.store is not None and gateway.readiness is not None
    feed = next(f for f in gateway.feeds if f.stream == BOOKING_STREAM)
    assert feed.position == 4

    await js.delete_stream(BOOKING_STREAM)
    await ensure_stream(js, BOOKING)
    await workflow_facts(js, "reborn")

    # Terminal only once the BOOKING feed projected the new stream from its start.
    await eventually(lambda: terminal(gateway, "reborn"), timeout=15)

    async def ready() -> bool:
        return not await gateway.readiness.failures()  # type: ignore[union-attr]

    await eventually(ready)
    assert feed.position == 2
    for booking_id in ("old-1", "old-2", "reborn"):
        view = await gateway.store.get(booking_id)
        assert view is not None and view.status is Status.CONFIRMED, booking_id
