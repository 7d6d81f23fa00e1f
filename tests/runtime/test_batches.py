"""Batches: one bad event does not hold back the others; ``prepare`` runs concurrently."""

from __future__ import annotations

import time
from collections.abc import Sequence

from nats.aio.msg import Msg
from nats.js import JetStreamContext

from choreo.consumer import EventConsumer
from choreo.runtime import Runtime
from tests.runtime.harness import (
    DURABLE,
    Probe,
    consumer_for,
    consumer_settled,
    effects,
    envelope_for,
    outbox_empty,
    running,
    stream_messages,
)
from tests.streams import BOOKING_STREAM, PAYMENT_STREAM
from tests.support import eventually, publish


def record_batches(consumer: EventConsumer) -> list[int]:
    """Records the size of every batch the consumer handles."""
    sizes: list[int] = []
    handle = consumer.handle_batch

    async def recording(msgs: Sequence[Msg]) -> None:
        sizes.append(len(msgs))
        await handle(msgs)

    consumer.handle_batch = recording  # type: ignore[method-assign]
    return sizes


async def test_one_bad_event_does_not_stop_the_good_ones_in_its_batch(
    rt: Runtime, js: JetStreamContext, probe: Probe
) -> None:
    ids = [f"b-{i}" for i in range(10)]
    probe.fail_times["b-4"] = 2  # fails in the batch and again on its own
    for booking_id in ids:  # all stored before the consumer starts, so they arrive in few batches
        await publish(js, envelope_for(booking_id))

    consumer = consumer_for(rt, probe.routes())
    batches = record_batches(consumer)
    async with running(consumer, rt.relay):
        await eventually(lambda: consumer.processed == 9, message="the good nine")
        handled_first_time = sorted(e["booking_id"] for e in await effects(rt.engine))
        await eventually(lambda: consumer.processed == 10, timeout=5.0, message="the bad one, retried")
        await eventually(lambda: consumer_settled(js, BOOKING_STREAM, DURABLE), message="all acked")
        await eventually(lambda: outbox_empty(rt.engine), message="facts published")

    # The reader hands out what has arrived, so the ten may come in more than one batch (as the
    # socket delivered them); what matters is that b-4 (the fifth) shared its first batch.
    first_deliveries, covered = [], 0
    for size in batches:
        if covered >= len(ids):
            break
        first_deliveries.append(size)
        covered += size
    batch_of_b4 = next(size for i, size in enumerate(first_deliveries) if sum(first_deliveries[: i + 1]) > 4)
    assert batch_of_b4 > 1, f"b-4 should share its batch with good events, got batches {batches}"
    assert handled_first_time == sorted(set(ids) - {"b-4"})
    assert sorted(e["booking_id"] for e in await effects(rt.engine)) == sorted(ids)
    assert all(len(probe.calls_for(b)) <= 2 for b in ids if b != "b-4"), "good events were not redelivered"
    emitted = [m.headers["ce-causationid"] for m in await stream_messages(js, PAYMENT_STREAM) if m.headers]
    assert len(emitted) == len(set(emitted)) == 10, "facts of the failed batch attempt were discarded"


async def test_prepare_runs_concurrently_and_reaches_the_handler(
    rt: Runtime, js: JetStreamContext, probe: Probe
) -> None:
    probe.prepare_delay = 0.2
    envs = [envelope_for(f"b-{i:02d}") for i in range(20)]
    for env in envs:
        await publish(js, env)

    consumer = consumer_for(rt, probe.routes(with_prepare=True))
    batches = record_batches(consumer)
    started = time.monotonic()
    async with running(consumer):
        await eventually(lambda: consumer.processed == 20, timeout=4.0, message="batch handled")
        elapsed = time.monotonic() - started

    assert elapsed < 20 * 0.2 / 2, f"prepare steps ran one after another ({elapsed:.2f}s)"
    assert probe.prepare_peak > 1
    assert sum(batches) == 20
    stored = {e["booking_id"]: e["prepared"] for e in await effects(rt.engine)}
    assert stored == {f"b-{i:02d}": f"prepared:b-{i:02d}:{env.id}" for i, env in enumerate(envs)}


async def test_failed_prepare_retries_only_that_event(
    rt: Runtime, js: JetStreamContext, probe: Probe
) -> None:
    probe.prepare_fail_times["b-2"] = 1
    for i in range(5):
        await publish(js, envelope_for(f"b-{i}"))

    consumer = consumer_for(rt, probe.routes(with_prepare=True))
    async with running(consumer):
        await eventually(lambda: consumer.processed == 5, timeout=5.0, message="all five, one after a retry")

    assert probe.prepare_calls.count("b-2") == 2
    assert all(probe.prepare_calls.count(f"b-{i}") == 1 for i in (0, 1, 3, 4))
    assert len(probe.calls_for("b-2")) == 1, "the handler never ran for the failed prepare"
    assert sorted(e["booking_id"] for e in await effects(rt.engine)) == [f"b-{i}" for i in range(5)]
