"""Failures judged by what they are: outages waited out, crashes counted, only poison dead-lettered."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from nats.js import JetStreamContext

from choreo import attempts
from choreo.consumer import EventConsumer
from choreo.errors import TransientError
from choreo.runtime import Runtime
from tests.runtime.conftest import MakeRuntime
from tests.runtime.harness import (
    DURABLE,
    Probe,
    consumer_for,
    consumer_settled,
    dlq_messages,
    effects,
    envelope_for,
    publish_raw,
    running,
)
from tests.streams import BOOKING_STREAM, DLQ_STREAM
from tests.support import eventually, publish, stream_count


async def test_transient_failures_are_retried_past_the_limit_and_never_dead_lettered(
    make_runtime: MakeRuntime, js: JetStreamContext, probe: Probe
) -> None:
    """A dependency down for longer than max_deliveries retries (e.g. a failover) loses nothing."""
    rt = await make_runtime(max_deliveries=2, retry_backoff_seconds=0.05, retry_backoff_max_seconds=0.2)
    probe.error = TransientError
    probe.fail_times["b-1"] = 6  # three times the limit
    consumer = consumer_for(rt, probe.routes())
    async with running(consumer):
        await publish(js, envelope_for("b-1"))
        await eventually(lambda: consumer.processed == 1, timeout=10, message="success after the outage")
    assert len(probe.calls_for("b-1")) == 7
    assert await stream_count(js, DLQ_STREAM) == 0
    assert [e["booking_id"] for e in await effects(rt.engine)] == ["b-1"]


async def test_transient_prepare_failures_are_retried_without_a_limit(
    make_runtime: MakeRuntime, js: JetStreamContext, probe: Probe
) -> None:
    """A provider answering 5xx for a while: the charge is retried until it goes through."""
    rt = await make_runtime(max_deliveries=2, retry_backoff_seconds=0.05, retry_backoff_max_seconds=0.2)
    probe.error = TransientError
    probe.prepare_fail_times["b-1"] = 5
    consumer = consumer_for(rt, probe.routes(with_prepare=True))
    async with running(consumer):
        await publish(js, envelope_for("b-1"))
        await eventually(lambda: consumer.processed == 1, timeout=10, message="success after the outage")
    assert probe.prepare_calls == ["b-1"] * 6
    assert await stream_count(js, DLQ_STREAM) == 0


async def test_a_fact_that_kills_the_process_does_not_take_its_batch_mates_to_the_dlq(
    make_runtime: MakeRuntime, js: JetStreamContext, probe: Probe, monkeypatch: pytest.MonkeyPatch
) -> None:
    """1 crashing fact + 20 innocent ones: the 20 are handled, the crashing one is dead-lettered alone."""
    rt = await make_runtime(max_deliveries=2, ack_wait_seconds=1.0)
    probe.hang.add("crashy")
    await publish(js, envelope_for("crashy"))
    for i in range(20):
        await publish(js, envelope_for(f"innocent-{i}"))

    crashes = 0
    while not await stream_count(js, DLQ_STREAM):
        assert crashes < 6, "the crashing fact was never dead-lettered"
        monkeypatch.setattr(attempts, "PROCESS", f"process-{crashes}")  # each run is a new process
        consumer = consumer_for(rt, probe.routes())
        task = asyncio.create_task(consumer.run())
        calls = len(probe.calls_for("crashy"))

        def crashed_again(calls: int = calls, consumer: EventConsumer = consumer) -> bool:
            return len(probe.calls_for("crashy")) > calls or bool(consumer.dead_lettered)

        # Until it is dead-lettered, every run of the consumer takes the crashing fact on again.
        with contextlib.suppress(AssertionError):
            await eventually(crashed_again, timeout=8)
        await asyncio.sleep(0.2)
        task.cancel()  # the "process" dies: nothing acked, nothing handed back
        with contextlib.suppress(asyncio.CancelledError):
            await task
        crashes += 1

    [dead] = await dlq_messages(js)
    assert (dead.headers or {})["choreo-dlq-error"] == "crashed or hung the process 2 times, running alone"
    monkeypatch.setattr(attempts, "PROCESS", "process-last")
    consumer = consumer_for(rt, probe.routes())
    async with running(consumer):
        await eventually(lambda: consumer_settled(js, BOOKING_STREAM, DURABLE), message="nothing left")
    innocents = sorted(f"innocent-{i}" for i in range(20))
    assert sorted(e["booking_id"] for e in await effects(rt.engine)) == innocents
    assert await stream_count(js, DLQ_STREAM) == 1


async def test_a_fact_that_hangs_is_given_up_on_and_its_batch_mates_flow(
    make_runtime: MakeRuntime, js: JetStreamContext, probe: Probe
) -> None:
    """A handler that never returns holds nothing forever: past the run timeout it is a failed run."""
    rt = await make_runtime(max_deliveries=2, ack_wait_seconds=1.0, run_timeout_seconds=0.5)
    probe.hang.add("stuck")
    await publish(js, envelope_for("stuck"))
    for i in range(20):
        await publish(js, envelope_for(f"mate-{i}"))
    consumer = consumer_for(rt, probe.routes())
    async with running(consumer):
        for i in range(5):
            await publish(js, envelope_for(f"later-{i}"))
        await eventually(lambda: consumer.processed == 25, timeout=15, message="the others handled")
        await eventually(
            lambda: stream_count(js, DLQ_STREAM), timeout=15, message="the hung one dead-lettered"
        )
        await eventually(lambda: consumer_settled(js, BOOKING_STREAM, DURABLE), message="settled")
    [dead] = await dlq_messages(js)
    assert "HungError" in (dead.headers or {})["choreo-dlq-error"]
    assert len(await effects(rt.engine)) == 25


async def test_a_database_blip_during_a_retry_is_not_taken_for_a_crash(
    make_runtime: MakeRuntime, js: JetStreamContext, probe: Probe, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run that failed while its failure could not be recorded did not crash this process."""
    rt = await make_runtime(max_deliveries=2, retry_backoff_seconds=0.05, retry_backoff_max_seconds=0.2)
    probe.error = TransientError
    probe.fail_times["b-1"] = 8

    async def unrecordable(*args: object, **kwargs: object) -> attempts.Attempts:
        raise ConnectionError("database blinked")

    monkeypatch.setattr(attempts, "record_failure", unrecordable)
    consumer = consumer_for(rt, probe.routes())
    async with running(consumer):
        await publish(js, envelope_for("b-1"))
        await eventually(lambda: consumer.processed == 1, timeout=10, message="success after the blips")
    assert await stream_count(js, DLQ_STREAM) == 0


async def test_facts_waiting_behind_a_slow_provider_are_prepared_once(
    make_runtime: MakeRuntime, js: JetStreamContext, probe: Probe
) -> None:
    """Facts in the pull buffer, behind batches slower than the ack wait, are kept alive too."""
    rt = await make_runtime(ack_wait_seconds=1.0, batch_size=4)
    probe.prepare_delay = 2.0
    consumer = consumer_for(rt, probe.routes(with_prepare=True))
    async with running(consumer):
        for i in range(40):
            await publish(js, envelope_for(f"b-{i}"))
        await eventually(lambda: consumer_settled(js, BOOKING_STREAM, DURABLE), timeout=40, message="settled")
    assert sorted(probe.prepare_calls) == sorted(f"b-{i}" for i in range(40)), "a fact was prepared twice"


async def test_a_provider_slower_than_the_ack_wait_is_called_once(
    make_runtime: MakeRuntime, js: JetStreamContext, probe: Probe
) -> None:
    """The fact is kept alive while ``prepare`` runs: no redelivery, no second charge, no false DLQ entry."""
    rt = await make_runtime(ack_wait_seconds=1.0)
    probe.prepare_delay = 2.5
    consumer = consumer_for(rt, probe.routes(with_prepare=True))
    async with running(consumer):
        await publish(js, envelope_for("slow"))
        await eventually(lambda: consumer.processed == 1, timeout=8, message="the slow fact handled")
        await asyncio.sleep(1.5)  # a redelivery would show up here
    assert probe.prepare_calls == ["slow"]
    assert len(probe.calls_for("slow")) == 1
    assert await stream_count(js, DLQ_STREAM) == 0


async def test_a_fact_already_handled_does_not_call_prepare_again(
    rt: Runtime, js: JetStreamContext, probe: Probe
) -> None:
    """A redrive or a re-publish of a handled fact must not call the provider a second time."""
    env = envelope_for("b-1")
    consumer = consumer_for(rt, probe.routes(with_prepare=True))
    async with running(consumer):
        await publish(js, env)
        await eventually(lambda: consumer.processed == 1, message="first delivery handled")
        # The same fact again, as `choreo dlq redrive` or a duplicate past the window would publish it.
        await publish(js, env, msg_id="again-1")
        await eventually(lambda: consumer.processed == 2, message="the copy acknowledged")
    assert probe.prepare_calls == ["b-1"]
    assert len(probe.calls_for("b-1")) == 1


async def test_a_dlq_that_refuses_does_not_kill_the_consumer_and_loses_nothing(
    rt: Runtime, js: JetStreamContext, probe: Probe
) -> None:
    """The DLQ deleted: the poison is kept, the DLQ re-provisioned, the poison stored; the rest flows."""
    consumer = consumer_for(rt, probe.routes())
    async with running(consumer):
        await js.delete_stream(DLQ_STREAM)
        poison_seq = await publish_raw(js, "booking.created", b"\xff not protobuf", {"ce-type": "x"})
        await publish(js, envelope_for("good"))
        await eventually(lambda: consumer.processed == 1, timeout=10, message="the good fact")
        await eventually(lambda: stream_count(js, DLQ_STREAM), timeout=10, message="the poison in the DLQ")
        await eventually(lambda: consumer_settled(js, BOOKING_STREAM, DURABLE), timeout=10, message="settled")
    assert consumer.dlq_failures >= 1, "the DLQ never refused: the test proves nothing"
    # On /metrics too, for the ChoreoDlqRefusing alert (docs/alerts.md).
    assert rt.stages.counter("dlq_refused_total", stream=BOOKING_STREAM, consumer=DURABLE) >= 1
    assert "choreo_dlq_refused_total{" in rt.stages.render()
    [dead] = await dlq_messages(js)
    assert (dead.headers or {})["choreo-dlq-sequence"] == str(poison_seq)


async def test_a_handler_that_raises_cancelled_error_fails_its_fact_not_the_consumer(
    make_runtime: MakeRuntime, js: JetStreamContext, probe: Probe
) -> None:
    """A stray CancelledError (a library that cancels what it should not) is the handler's failure."""
    rt = await make_runtime(max_deliveries=2, retry_backoff_seconds=0.05, retry_backoff_max_seconds=0.2)
    probe.error = asyncio.CancelledError  # type: ignore[assignment]
    probe.always_fail.add("cancelling")
    consumer = consumer_for(rt, probe.routes())
    async with running(consumer):
        await publish(js, envelope_for("cancelling"))
        await publish(js, envelope_for("fine"))
        await eventually(
            lambda: stream_count(js, DLQ_STREAM), timeout=10, message="the failing fact dead-lettered"
        )
        await eventually(lambda: consumer.processed == 1, message="the other fact handled")
    [dead] = await dlq_messages(js)
    assert "HandlerCancelledError" in (dead.headers or {})["choreo-dlq-error"]
