"""The read model fed from JetStream: order-independence, poison, replay, restarts, readiness."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import grpc
import httpx
import nats
from grpc_health.v1 import health_pb2, health_pb2_grpc
from nats.js import JetStreamContext
from sqlalchemy import select

from choreo.booking.v1 import events_pb2
from choreo.db import make_engine
from choreo.dlq import H_ERROR, H_ORIGINAL_SEQUENCE, H_ORIGINAL_STREAM
from choreo.envelope import Envelope
from choreo.payment.v1 import events_pb2 as payment_events
from choreoctl.stack.natsserver import NatsServer
from gateway.application.principal import ANONYMOUS
from gateway.build import GatewayService
from gateway.readmodel.model import Status
from gateway.readmodel.tables import TABLES, ReadModelBase
from tests.gateway.conftest import StartGateway, stop_gateway
from tests.gateway.fakes import FakeBookingService, ts
from tests.streams import BOOKING, BOOKING_STREAM, DLQ, DLQ_STREAM, PAYMENT, PAYMENT_STREAM
from tests.support import eventually, publish


async def workflow_facts(
    js: JetStreamContext, booking_id: str, *, declined: bool = False, payment_first: bool = False
) -> list[Envelope]:
    """Publishes one booking's facts (optionally the PAYMENT ones before the BOOKING ones)."""
    correlation = f"wf-{booking_id}"
    created = Envelope.wrap(
        events_pb2.BookingCreated(
            booking_id=booking_id, user_id="u1", amount_cents=700, currency="USD", created_at=ts(1_000_000)
        ),
        source="booking",
        subject="booking.created",
        correlation_id=correlation,
        causation_id="cmd",
    )
    if declined:
        paid = Envelope.wrap(
            payment_events.PaymentFailed(
                booking_id=booking_id,
                payment_id="p-" + booking_id,
                reason="card_declined",
                failed_at=ts(2_000_000),
            ),
            source="payment",
            subject="payment.failed",
            correlation_id=correlation,
            causation_id=created.id,
        )
        outcome = Envelope.wrap(
            events_pb2.BookingCancelled(
                booking_id=booking_id, reason="card_declined", cancelled_at=ts(3_000_000)
            ),
            source="booking",
            subject="booking.cancelled",
            correlation_id=correlation,
            causation_id=paid.id,
        )
    else:
        paid = Envelope.wrap(
            payment_events.PaymentSucceeded(
                booking_id=booking_id,
                payment_id="p-" + booking_id,
                amount_cents=700,
                succeeded_at=ts(2_000_000),
            ),
            source="payment",
            subject="payment.succeeded",
            correlation_id=correlation,
            causation_id=created.id,
        )
        outcome = Envelope.wrap(
            events_pb2.BookingConfirmed(
                booking_id=booking_id, payment_id="p-" + booking_id, confirmed_at=ts(3_000_000)
            ),
            source="booking",
            subject="booking.confirmed",
            correlation_id=correlation,
            causation_id=paid.id,
        )
    order = [paid, created, outcome] if payment_first else [created, paid, outcome]
    for env in order:
        await publish(js, env)
    return [created, paid, outcome]


async def ensure_streams(js: JetStreamContext) -> None:
    from choreo.bus import ensure_stream

    for stream in (BOOKING, PAYMENT, DLQ):
        await ensure_stream(js, stream)


async def snapshot(database_url: str) -> dict[str, list[tuple[Any, ...]]]:
    engine = make_engine(database_url, writer=False)
    try:
        async with engine.connect() as conn:
            return {
                t.name: [tuple(r) for r in await conn.execute(select(t).order_by(*t.primary_key.columns))]
                for t in TABLES
            }
    finally:
        await engine.dispose()


async def delete_read_model(database_url: str) -> None:
    if database_url.startswith("sqlite"):
        path = database_url.split(":///", 1)[1]
        for suffix in ("", "-wal", "-shm"):
            await asyncio.to_thread(Path(f"{path}{suffix}").unlink, missing_ok=True)
        return
    engine = make_engine(database_url)
    async with engine.begin() as conn:
        await conn.run_sync(ReadModelBase.metadata.drop_all)
    await engine.dispose()


async def test_facts_from_two_streams_project_the_same_in_any_order(
    start_gateway: StartGateway, database_url: str, js: JetStreamContext
) -> None:
    await ensure_streams(js)
    await workflow_facts(js, "in-order")
    await workflow_facts(js, "payment-first", payment_first=True)
    await workflow_facts(js, "declined-payment-first", declined=True, payment_first=True)
    gateway = await start_gateway(database_url)
    assert gateway.store is not None and gateway.core is not None

    views = {b: await gateway.store.get(b) for b in ("in-order", "payment-first", "declined-payment-first")}
    for booking_id in ("in-order", "payment-first"):
        view = views[booking_id]
        assert view is not None and view.status is Status.CONFIRMED, view
        assert (view.user_id, view.amount_cents, view.payment_id) == ("u1", 700, f"p-{booking_id}")
        assert (view.created_at_us, view.updated_at_us) == (1_000_000, 3_000_000)
    declined = views["declined-payment-first"]
    assert declined is not None and declined.status is Status.CANCELLED
    assert declined.cancellation_reason == "card_declined"

    # Live facts keep flowing in after the initial replay.
    await workflow_facts(js, "live", declined=True)

    async def live_done() -> bool:
        view = await gateway.store.get("live")  # type: ignore[union-attr]
        return view is not None and view.is_terminal

    await eventually(live_done)
    page = await gateway.core.trace(caller=ANONYMOUS, booking_id="payment-first")
    assert page.correlation_id == "wf-payment-first"
    assert [e.event_type.rsplit(".", 1)[1] for e in page.events] == [
        "BookingCreated",
        "PaymentSucceeded",
        "BookingConfirmed",
    ]


async def test_poison_goes_to_the_dlq_and_the_projection_carries_on(
    start_gateway: StartGateway, database_url: str, js: JetStreamContext
) -> None:
    await ensure_streams(js)
    gateway = await start_gateway(database_url)
    assert gateway.store is not None and gateway.core is not None
    garbage = Envelope(
        id="garbage-1",
        type="choreo.booking.v1.BookingCreated",
        source="booking",
        subject="booking.created",
        data=b"\xff\xfe not protobuf",
        correlation_id="wf-garbage",
    )
    await publish(js, garbage)
    await js.publish("booking.confirmed", b"no headers at all")
    unknown = Envelope(
        id="unknown-1",
        type="choreo.booking.v1.BookingTeleported",
        source="booking",
        subject="booking.teleported",
        data=b"",
        correlation_id="wf-unknown",
    )
    await publish(js, unknown)
    await workflow_facts(js, "after-poison")

    async def projected() -> bool:
        view = await gateway.store.get("after-poison")  # type: ignore[union-attr]
        return view is not None and view.status is Status.CONFIRMED

    await eventually(projected)
    feed = next(f for f in gateway.feeds if f.stream == BOOKING_STREAM)
    assert feed.dead_lettered == 3

    dlq = await js.pull_subscribe("dlq.booking.gateway-projection", stream=DLQ_STREAM)
    copies = await dlq.fetch(10, timeout=2)
    assert [m.headers[H_ORIGINAL_SEQUENCE] for m in copies if m.headers] == ["1", "2", "3"]
    assert all(m.headers and m.headers[H_ORIGINAL_STREAM] == BOOKING_STREAM for m in copies)
    errors = [m.headers[H_ERROR] for m in copies if m.headers]
    assert "undecodable" in errors[0] and "not an event" in errors[1] and "unknown type" in errors[2]
    assert copies[1].data == b"no headers at all"
    # What had event headers is still in its workflow's trace.
    events = (await gateway.core.trace(caller=ANONYMOUS, correlation_id="wf-garbage")).events
    assert [e.event_id for e in events] == ["garbage-1"]
    events = (await gateway.core.trace(caller=ANONYMOUS, correlation_id="wf-unknown")).events
    assert [e.event_type for e in events] == ["choreo.booking.v1.BookingTeleported"]


async def test_deleting_the_read_model_rebuilds_the_same_state_by_replay(
    start_gateway: StartGateway, database_url: str, fake_booking: FakeBookingService
) -> None:
    gateway = await start_gateway(database_url)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.http_port}") as http:
        ids = []
        for i, token in enumerate(
            ["tok_visa", "tok_chargeDeclined", "tok_visa", "tok_chargeDeclinedInsufficientFunds"]
        ):
            body = {
                "user_id": f"u{i % 2}",
                "amount_cents": 100 + i,
                "currency": "EUR",
                "payment_token": token,
            }
            ids.append((await http.post("/v1/bookings", json=body)).json()["booking_id"])
        for booking_id in ids:
            done = await http.get(f"/v1/bookings/{booking_id}", params={"wait": 5})
            assert done.json()["status"] != "BOOKING_STATUS_PENDING"
    before = await snapshot(database_url)
    assert len(before["bookings"]) == 4 and len(before["trace_events"]) == 12
    await stop_gateway(gateway)

    await delete_read_model(database_url)
    rebuilt = await start_gateway(database_url)
    assert sum(f.applied for f in rebuilt.feeds) == 12
    assert await snapshot(database_url) == before


async def test_a_restart_resumes_from_the_checkpoint(
    start_gateway: StartGateway, sqlite_url: str, js: JetStreamContext
) -> None:
    await ensure_streams(js)
    await workflow_facts(js, "first")
    gateway = await start_gateway(sqlite_url)
    assert sum(f.applied for f in gateway.feeds) == 3
    await stop_gateway(gateway)

    await workflow_facts(js, "second", declined=True)
    again = await start_gateway(sqlite_url)
    assert again.store is not None
    # Only the facts published while it was down were read: nothing is applied twice.
    assert sum(f.applied for f in again.feeds) == 3
    # NOTIFICATION and INVENTORY (in the default GATEWAY_STREAMS) do not exist here: nothing read.
    assert {f.stream: f.position for f in again.feeds} == {
        BOOKING_STREAM: 4,
        PAYMENT_STREAM: 2,
        "NOTIFICATION": 0,
        "INVENTORY": 0,
    }
    second = await again.store.get("second")
    assert second is not None and second.status is Status.CANCELLED
    assert await again.store.count("trace_events") == 6


async def test_survives_a_nats_restart(
    start_gateway: StartGateway, sqlite_url: str, nats_server: NatsServer, js: JetStreamContext
) -> None:
    await ensure_streams(js)
    gateway = await start_gateway(sqlite_url, projection_heartbeat_seconds=0.2)
    assert gateway.store is not None and gateway.readiness is not None
    await workflow_facts(js, "before")
    store = gateway.store

    async def terminal(booking_id: str) -> bool:
        view = await store.get(booking_id)
        return view is not None and view.is_terminal

    await eventually(lambda: terminal("before"))

    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)

        async def health_is(status: int) -> bool:
            reply = await health.Check(health_pb2.HealthCheckRequest(service=""))
            return bool(reply.status == status)

        await eventually(lambda: health_is(health_pb2.HealthCheckResponse.SERVING))
        nats_server.kill()

        async def nats_failing() -> bool:
            return "nats" in await gateway.readiness.failures()  # type: ignore[union-attr]

        await eventually(nats_failing)
        await eventually(lambda: health_is(health_pb2.HealthCheckResponse.NOT_SERVING))
        nats_server.start()

        # The test's own connection reconnects; publish once JetStream answers again.
        publisher = await nats.connect(nats_server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.1)
        try:
            pjs = publisher.jetstream()
            await workflow_facts(pjs, "after")
        finally:
            await publisher.close()
        await eventually(lambda: terminal("after"), timeout=15)
        await eventually(lambda: health_is(health_pb2.HealthCheckResponse.SERVING))
    assert not await gateway.readiness.failures()
    feed = next(f for f in gateway.feeds if f.stream == BOOKING_STREAM)
    assert feed.position == 4 and await store.count("trace_events") == 6


async def test_readiness_waits_for_the_initial_replay(
    start_gateway: StartGateway, sqlite_url: str, js: JetStreamContext
) -> None:
    await ensure_streams(js)
    bookings = 300
    acks = []
    for i in range(bookings):
        env = Envelope.wrap(
            events_pb2.BookingCreated(booking_id=f"b{i}", user_id="u", amount_cents=1, currency="USD"),
            source="booking",
            subject="booking.created",
            correlation_id=str(uuid.uuid4()),
        )
        acks.append(await js.publish_async(env.subject, env.data, headers=env.headers()))
    await asyncio.gather(*acks)
    gateway = await start_gateway(sqlite_url, wait_ready=False)
    assert gateway.readiness is not None and gateway.store is not None
    assert "projection" in await gateway.readiness.failures()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.http_port}") as http:

        async def ready() -> bool:
            return (await http.get("/readyz")).status_code == 200

        await eventually(ready)
    assert await gateway.store.count("bookings") == bookings


async def test_an_absent_stream_is_waited_for(
    start_gateway: StartGateway, sqlite_url: str, js: JetStreamContext
) -> None:
    # The gateway may start before the services that own the streams.
    gateway: GatewayService = await start_gateway(sqlite_url)
    assert gateway.readiness is not None and gateway.store is not None
    assert not await gateway.readiness.failures()
    await ensure_streams(js)
    await workflow_facts(js, "late")

    async def projected() -> bool:
        view = await gateway.store.get("late")  # type: ignore[union-attr]
        return view is not None and view.is_terminal

    await eventually(projected)


async def test_a_poison_fact_waits_for_its_dlq_copy_when_the_dlq_is_gone(
    start_gateway: StartGateway, database_url: str, js: JetStreamContext
) -> None:
    """The DLQ stream deleted and, for a while, impossible to re-create: the feed holds the poison
    fact (its checkpoint stays before it) until the copy is stored, then carries on."""
    await ensure_streams(js)
    gateway = await start_gateway(database_url)
    assert gateway.store is not None
    feed = next(f for f in gateway.feeds if f.stream == BOOKING_STREAM)
    await js.delete_stream(DLQ_STREAM)
    # A stream that takes the DLQ's subjects: JetStream refuses to create the DLQ beside it.
    await js.add_stream(name="BLOCKS_DLQ", subjects=["dlq.>"])
    garbage = Envelope(
        id="garbage-1",
        type="choreo.booking.v1.BookingCreated",
        source="booking",
        subject="booking.created",
        data=b"\xff\xfe not protobuf",
        correlation_id="wf-garbage",
    )
    await publish(js, garbage)
    await workflow_facts(js, "after-poison")
    await asyncio.sleep(1.5)
    assert feed.position == 0 and await gateway.store.checkpoint(BOOKING_STREAM) == 0
    booking_facts = [e for e in await gateway.store.trace("wf-after-poison") if e.stream == BOOKING_STREAM]
    assert not booking_facts, "projected past the poison"
    assert (await js.stream_info("BLOCKS_DLQ")).state.messages == 0

    await js.delete_stream("BLOCKS_DLQ")

    async def projected() -> bool:
        view = await gateway.store.get("after-poison")  # type: ignore[union-attr]
        return view is not None and view.status is Status.CONFIRMED

    await eventually(projected, timeout=15)
    assert feed.dead_lettered == 1
    copy = await js.get_msg(DLQ_STREAM, 1)
    assert copy.headers is not None and copy.headers[H_ORIGINAL_SEQUENCE] == "1"
    assert "undecodable" in copy.headers[H_ERROR]
