"""Transactional outbox: published after commit, in order, once, even through a NATS outage."""

from __future__ import annotations

import asyncio
import logging
from functools import partial

import pytest
from nats.js import JetStreamContext
from sqlalchemy import insert

from choreo.envelope import Envelope
from choreo.outbox import OutboxRelay, add_to_outbox
from choreo.payment.v1 import events_pb2 as payment_events
from choreo.runtime import Runtime
from choreoctl.stack.natsserver import NatsServer
from tests.runtime.conftest import MakeRuntime
from tests.runtime.harness import (
    SERVICE,
    effect_table,
    effects,
    outbox_empty,
    outbox_size,
    reader_engine,
    running,
    stream_messages,
)
from tests.streams import PAYMENT_STREAM
from tests.support import eventually, stream_count


def payment_event(n: int) -> Envelope:
    return Envelope.wrap(
        payment_events.PaymentSucceeded(
            payment_id=f"p-{n}", booking_id=f"b-{n}", amount_cents=n, currency="EUR"
        ),
        source=SERVICE,
        subject="payment.succeeded",
        correlation_id=f"wf-{n}",
    )


async def commit_events(rt: Runtime, envs: list[Envelope]) -> None:
    """A state change and its facts, in one transaction."""
    async with rt.engine.begin() as conn:
        await conn.execute(
            insert(effect_table),
            [{"booking_id": e.id, "event_id": e.id, "correlation_id": "wf"} for e in envs],
        )
        await add_to_outbox(conn, envs)


async def published_ids(js: JetStreamContext) -> list[str]:
    return [m.headers["ce-id"] for m in await stream_messages(js, PAYMENT_STREAM) if m.headers]


async def test_nothing_is_visible_to_the_relay_before_commit(
    rt: Runtime, js: JetStreamContext, database_url: str
) -> None:
    # A relay on a non-locking reader engine, so it can look while the writer's transaction is open.
    peeking = reader_engine(database_url)
    try:
        relay = OutboxRelay(peeking, js)
        envs = [payment_event(i) for i in range(3)]
        async with rt.engine.begin() as conn:
            await add_to_outbox(conn, envs)
            assert await relay.publish_pending() == 0
        assert await stream_count(js, PAYMENT_STREAM) == 0
        assert await rt.relay.publish_pending() == 3
        assert await published_ids(js) == [e.id for e in envs]
    finally:
        await peeking.dispose()


async def test_rolled_back_transaction_publishes_nothing(rt: Runtime, js: JetStreamContext) -> None:
    doomed = [payment_event(i) for i in range(3)]
    sentinel = payment_event(99)
    async with running(rt.relay):
        with pytest.raises(RuntimeError, match="abort"):
            async with rt.engine.begin() as conn:
                await conn.execute(
                    insert(effect_table).values(booking_id="doomed", event_id="x", correlation_id="wf")
                )
                await add_to_outbox(conn, doomed)
                raise RuntimeError("abort")
        rt.relay.notify()
        # Committed after the rolled-back rows would have been: once it is out, they never will be.
        await commit_events(rt, [sentinel])
        rt.relay.notify()
        await eventually(lambda: stream_count(js, PAYMENT_STREAM), message="sentinel published")
    assert await published_ids(js) == [sentinel.id]
    assert [e["booking_id"] for e in await effects(rt.engine)] == [sentinel.id]
    assert await outbox_size(rt.engine) == 0


async def test_publishes_in_order_with_msg_id_and_deletes_rows(rt: Runtime, js: JetStreamContext) -> None:
    envs = [payment_event(i) for i in range(40)]
    async with running(rt.relay):
        for chunk in (envs[:10], envs[10:25], envs[25:]):
            await commit_events(rt, chunk)
            rt.relay.notify()
        await eventually(lambda: outbox_empty(rt.engine), message="outbox drained")
    stored = await stream_messages(js, PAYMENT_STREAM)
    assert [m.headers["ce-id"] for m in stored if m.headers] == [e.id for e in envs]
    assert all(m.headers and m.headers["Nats-Msg-Id"] == m.headers["ce-id"] for m in stored)
    assert [m.seq for m in stored] == list(range(1, 41))


async def test_notify_wakes_the_relay_at_once(make_runtime: MakeRuntime, js: JetStreamContext) -> None:
    # A poll interval far beyond the deadline: only notify() can explain a quick publish.
    rt = await make_runtime(poll_interval=60.0)
    async with running(rt.relay):
        await asyncio.sleep(0)  # let the relay start waiting
        await commit_events(rt, [payment_event(1)])
        rt.relay.notify()
        await eventually(
            lambda: stream_count(js, PAYMENT_STREAM), timeout=2.0, message="publish after notify"
        )


async def test_polling_catches_up_rows_committed_without_notify(
    make_runtime: MakeRuntime, js: JetStreamContext
) -> None:
    rt = await make_runtime(poll_interval=0.2)
    envs = [payment_event(i) for i in range(5)]
    async with running(rt.relay):
        await commit_events(rt, envs)  # as if written by a process that crashed before notifying
        await eventually(lambda: outbox_empty(rt.engine), timeout=3.0, message="polled publish")
    assert await published_ids(js) == [e.id for e in envs]


async def test_survives_nats_outage_and_publishes_each_event_once(
    rt: Runtime, js: JetStreamContext, nats_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    before = [payment_event(i) for i in range(5)]
    during = [payment_event(i) for i in range(5, 25)]
    caplog.set_level(logging.WARNING, logger="choreo.outbox")
    async with running(rt.relay):
        await commit_events(rt, before)
        rt.relay.notify()
        await eventually(lambda: outbox_empty(rt.engine), message="first events published")

        nats_server.kill()
        await eventually(lambda: not rt.nc.is_connected, message="client notices the outage")
        for env in during:
            await commit_events(rt, [env])
            rt.relay.notify()
        await eventually(
            lambda: any("outbox publish failed" in r.getMessage() for r in caplog.records),
            message="relay reports a failed publish",
        )
        assert await outbox_size(rt.engine) == len(during), "rows must stay until JetStream acknowledges"

        await asyncio.to_thread(nats_server.restart)
        await eventually(
            lambda: outbox_empty(rt.engine), timeout=15.0, message="outbox drained after restart"
        )

    stored = await published_ids(js)
    assert sorted(stored) == sorted(e.id for e in before + during), "each event exactly once"
    assert stored[:5] == [e.id for e in before]


async def test_an_unroutable_row_does_not_hold_back_later_facts(rt: Runtime, js: JetStreamContext) -> None:
    """A fact on a subject no stream captures is refused by JetStream; it stays, loudly, alone."""
    stray = Envelope.wrap(
        payment_events.PaymentSucceeded(payment_id="p-stray"),
        source=SERVICE,
        subject="nowhere.captured",
        correlation_id="wf-stray",
    )
    async with running(rt.relay):
        await commit_events(rt, [payment_event(0), stray])
        rt.relay.notify()
        await eventually(lambda: stream_count(js, PAYMENT_STREAM), message="the routable fact")
        # Every later fact still goes out right after its commit, not after a backoff.
        for n in range(1, 4):
            await commit_events(rt, [payment_event(n)])
            rt.relay.notify()
            await eventually(
                partial(_count_is, js, n + 1), timeout=1.0, message=f"fact {n} published promptly"
            )
    assert await outbox_size(rt.engine) == 1, "the refused row is kept, not dropped"


async def _count_is(js: JetStreamContext, n: int) -> bool:
    return await stream_count(js, PAYMENT_STREAM) == n
