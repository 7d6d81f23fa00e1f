"""A stream lost while the service runs: the relay re-provisions it; until it can, the service is unready."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from nats.js import JetStreamContext
from nats.js.api import StreamConfig

from choreo.db import create_tables
from choreo.runtime import Runtime, open_runtime
from choreoctl.cli import main
from choreoctl.stack.natsserver import NatsServer
from choreoctl.stack.ports import free_port
from tests.runtime.harness import (
    TOPOLOGY,
    close_runtime,
    effect_table,
    outbox_empty,
    outbox_size,
    running,
    settings_for,
)
from tests.runtime.test_outbox import commit_events, payment_event, published_ids
from tests.runtime.test_outbox_poison import fact
from tests.streams import PAYMENT_STREAM
from tests.support import eventually, stream_count


@pytest.fixture
async def service_rt(nats_server: NatsServer, database_url: str) -> AsyncIterator[Runtime]:
    """The runtime exactly as ``open_runtime`` wires it (its own relay, health checks)."""
    settings = settings_for(nats_server.url, database_url, health_port=free_port())
    rt = await open_runtime(settings, TOPOLOGY, migrations=None)
    await create_tables(rt.engine, [effect_table])
    yield rt
    await close_runtime(rt)


async def test_a_deleted_stream_is_re_provisioned_and_the_facts_published(
    service_rt: Runtime, js: JetStreamContext
) -> None:
    rt = service_rt
    first, second = payment_event(1), payment_event(2)
    async with running(rt.relay):
        await commit_events(rt, [first])
        rt.relay.notify()
        await eventually(lambda: stream_count(js, PAYMENT_STREAM), message="first fact")
        await js.delete_stream(PAYMENT_STREAM)
        await commit_events(rt, [second])
        rt.relay.notify()
        await eventually(lambda: outbox_empty(rt.engine), timeout=5.0, message="published again")
    assert await published_ids(js) == [second.id], "the re-created stream holds the new fact"
    assert rt.relay.parked_rows == 0


async def test_unready_while_the_stream_cannot_be_re_provisioned(
    service_rt: Runtime, js: JetStreamContext
) -> None:
    rt = service_rt
    service = rt.service([])
    assert service.health is not None
    env = payment_event(1)
    await js.delete_stream(PAYMENT_STREAM)
    # A stream on part of PAYMENT's subjects: PAYMENT cannot be created (overlap), and
    # payment.succeeded is captured by nobody.
    await js.add_stream(StreamConfig(name="BLOCKER", subjects=["payment.failed"]))
    async with running(rt.relay):
        await commit_events(rt, [env])
        rt.relay.notify()
        await eventually(lambda: rt.relay.check(), timeout=5.0, message="the relay reports the problem")
        failures = await service.health.evaluate()
        assert "outbox" in failures, failures
        assert await outbox_size(rt.engine) == 1 and rt.relay.parked_rows == 0, "kept, not parked"

        await js.delete_stream("BLOCKER")
        await eventually(lambda: outbox_empty(rt.engine), timeout=15.0, message="published after all")
        assert await service.health.evaluate() == {}
    assert await published_ids(js) == [env.id]


async def test_a_subject_no_stream_captures_is_parked_after_one_re_provisioning(
    service_rt: Runtime, js: JetStreamContext, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rt = service_rt
    stray = fact(1, "wf-stray", subject="nowhere.captured")
    good = payment_event(2)
    async with running(rt.relay):
        await commit_events(rt, [stray, good])
        rt.relay.notify()
        await eventually(lambda: rt.relay.parked_rows == 1, timeout=5.0, message="the stray row parked")
        await eventually(lambda: stream_count(js, PAYMENT_STREAM), message="the good fact")
        assert await rt.relay.check() is None

        # The operator adds a stream for it, then re-queues the row.
        await js.add_stream(StreamConfig(name="NOWHERE", subjects=["nowhere.>"]))
        assert await asyncio.to_thread(main, ["outbox", "--database-url", database_url, "list"]) == 0
        row_id = capsys.readouterr().out.split()[0].lstrip("#")
        assert await asyncio.to_thread(main, ["outbox", "--database-url", database_url, "retry", row_id]) == 0
        assert f"#{row_id} re-queued" in capsys.readouterr().out
        rt.relay.notify()
        await eventually(lambda: stream_count(js, "NOWHERE"), timeout=5.0, message="the re-queued row")
    assert await outbox_size(rt.engine) == 0
