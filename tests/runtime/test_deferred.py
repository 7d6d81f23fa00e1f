"""A fact that says "not yet" (``choreo.errors.Deferred``): back after exactly its delay, never a failure."""

from __future__ import annotations

import asyncio
import time

import pytest
from nats.js import JetStreamContext

from choreo.attempts import attempts_table
from choreo.booking.v1 import events_pb2 as booking_events
from choreo.envelope import Envelope
from choreo.errors import Deferred
from choreo.handler import Route
from choreo.payment.v1 import events_pb2 as payment_events
from tests.runtime.conftest import MakeRuntime
from tests.runtime.harness import (
    DURABLE,
    Probe,
    consumer_for,
    consumer_settled,
    effects,
    envelope_for,
    running,
)
from tests.streams import BOOKING_STREAM, DLQ_STREAM
from tests.support import eventually, publish, row_count, stream_count


class Later:
    """A ``prepare`` step that defers each fact by the next of its scripted delays, then lets it through."""

    def __init__(self, probe: Probe, delays: list[float]) -> None:
        self.probe = probe
        self.delays = delays
        #: ``time.monotonic()`` of every call.
        self.calls: list[float] = []

    async def __call__(self, message: booking_events.BookingCreated, envelope: Envelope) -> str:
        self.calls.append(time.monotonic())
        if self.delays:
            raise Deferred(self.delays.pop(0))
        return await self.probe.prepare(message, envelope)

    def routes(self) -> list[Route[booking_events.BookingCreated]]:
        return [
            Route(
                booking_events.BookingCreated,
                self.probe.handle,
                emits=(payment_events.PaymentSucceeded,),
                prepare=self,
            )
        ]


async def test_a_deferred_fact_is_handled_once_after_its_delay_without_attempts_or_dlq(
    make_runtime: MakeRuntime, js: JetStreamContext, probe: Probe
) -> None:
    rt = await make_runtime(max_deliveries=2, retry_backoff_seconds=0.05, retry_backoff_max_seconds=0.2)
    later = Later(probe, [1.0])
    consumer = consumer_for(rt, later.routes())
    async with running(consumer):
        published = time.monotonic()
        await publish(js, envelope_for("b-late"))
        await eventually(lambda: consumer.processed == 1, timeout=10, message="the deferred fact handled")
        await eventually(lambda: consumer_settled(js, BOOKING_STREAM, DURABLE), message="settled")
        await asyncio.sleep(0.3)  # a second, wrong run would show now
    assert len(later.calls) == 2
    waited = later.calls[1] - later.calls[0]
    assert 0.9 <= waited < 3.0, waited
    [(_, handled_at)] = [(b, t) for b, t in probe.calls]
    assert handled_at - published >= 0.9
    assert [e["booking_id"] for e in await effects(rt.engine)] == ["b-late"]
    assert await row_count(rt.engine, attempts_table) == 0
    assert await stream_count(js, DLQ_STREAM) == 0


async def test_deferrals_count_no_attempt_even_past_the_delivery_limit(
    make_runtime: MakeRuntime, js: JetStreamContext, probe: Probe
) -> None:
    """Deferred four times with max_deliveries=2: never dead-lettered, no record left while it waits."""
    rt = await make_runtime(max_deliveries=2, retry_backoff_seconds=0.05, retry_backoff_max_seconds=0.2)
    later = Later(probe, [0.4, 0.4, 0.4, 0.4])
    consumer = consumer_for(rt, later.routes())
    async with running(consumer):
        await publish(js, envelope_for("b-wait"))
        # Between the third and fourth run it came back twice (each run of a redelivery is
        # recorded when it begins): the deferral dropped that record.
        await eventually(lambda: len(later.calls) >= 3, timeout=10, message="three deferrals")
        await asyncio.sleep(0.15)
        assert await row_count(rt.engine, attempts_table) == 0
        await eventually(lambda: consumer.processed == 1, timeout=10, message="handled at last")
    assert len(later.calls) == 5
    gaps = [b - a for a, b in zip(later.calls, later.calls[1:], strict=False)]
    assert all(gap >= 0.35 for gap in gaps), gaps
    assert len(probe.calls) == 1
    assert await stream_count(js, DLQ_STREAM) == 0
    assert await row_count(rt.engine, attempts_table) == 0


def test_a_deferral_needs_a_finite_delay_and_a_past_one_is_due_now() -> None:
    assert Deferred(-3).seconds == 0.0
    assert Deferred(1.5).seconds == 1.5
    with pytest.raises(ValueError, match="finite"):
        Deferred(float("nan"))


class DueAt:
    """A ``prepare`` step that defers each fact until its own due time (as booking's payment timeout does)."""

    def __init__(self, probe: Probe, wait: float) -> None:
        self.probe = probe
        self.wait = wait
        #: ``time.monotonic()`` each booking was published at.
        self.published: dict[str, float] = {}

    async def __call__(self, message: booking_events.BookingCreated, envelope: Envelope) -> str:
        left = self.published[message.booking_id] + self.wait - time.monotonic()
        if left > 0:
            raise Deferred(left)
        return await self.probe.prepare(message, envelope)


async def test_more_waiting_facts_than_max_ack_pending_still_come_due_on_time(
    make_runtime: MakeRuntime, js: JetStreamContext, probe: Probe
) -> None:
    """3000 facts that each wait 3 s, published faster than ``max_ack_pending`` (1024) / 3 s.

    A waiting fact holds a slot of ``max_ack_pending``, so most are fetched late; each is
    fetched with less left to wait, so none fires late (beyond the handling itself). Were
    the wait counted from the fetch, the last would fire about 5 s late.
    """
    total, wait = 3000, 3.0
    rt = await make_runtime()
    due = DueAt(probe, wait)
    route = Route(
        booking_events.BookingCreated, probe.handle, emits=(payment_events.PaymentSucceeded,), prepare=due
    )
    consumer = consumer_for(rt, [route])
    assert consumer.config().max_ack_pending < total / 2
    async with running(consumer):
        for i in range(total):
            booking_id = f"b-{i}"
            due.published[booking_id] = time.monotonic()
            await publish(js, envelope_for(booking_id))
        await eventually(lambda: consumer.processed == total, timeout=60, message="every fact handled")
    late = sorted(t - due.published[b] - wait for b, t in probe.calls)
    assert len(probe.calls) == total
    assert late[0] >= 0, "a fact was handled before it was due"
    assert late[-1] < 3.0, f"handled up to {late[-1]:.1f} s after due (median {late[total // 2]:.2f} s)"
