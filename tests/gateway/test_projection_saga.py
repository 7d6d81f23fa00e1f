"""The saga's facts in the read model and in traces (issue 12), on a real nats-server and both databases.

A resource booking's whole workflow, as the services publish it: BookingCreated (with
its resource), InventoryReserved, the payment, BookingConfirmed, the user's cancel,
then BookingCancelled's compensations InventoryReleased and PaymentRefunded. The trace
shows every one of them in causal order; the booking ends CANCELLED whatever came last.
A saga fact on another service's subject is poison (DLQ), as booking's and payment's are.
"""

from __future__ import annotations

from typing import Any

import grpc
from nats.js import JetStreamContext

from choreo.bus import ensure_stream
from choreo.contract import fact_stream, fact_subject
from choreo.dlq import H_ERROR
from choreo.envelope import Envelope
from choreo.gateway.v1 import gateway_pb2 as gw
from choreo.gateway.v1 import gateway_pb2_grpc
from choreo.inventory.v1 import events_pb2 as inventory_events
from choreo.payment.v1 import events_pb2 as payment_events
from choreo.topology import Stream
from gateway.readmodel.model import Status
from tests.gateway.conftest import StartGateway
from tests.gateway.fakes import FakeBookingService, ts
from tests.streams import DLQ_STREAM, dlq_subject
from tests.support import eventually, publish

INVENTORY = Stream(fact_stream(inventory_events.InventoryReserved), ("inventory.>",))


def fact(message: Any, *, correlation_id: str, causation_id: str, source: str = "") -> Envelope:
    subject = fact_subject(type(message))
    return Envelope.wrap(
        message,
        source=source or subject.split(".", 1)[0],
        subject=subject,
        correlation_id=correlation_id,
        causation_id=causation_id,
    )


async def test_a_resource_bookings_saga_is_projected_and_traced(
    start_gateway: StartGateway, database_url: str, js: JetStreamContext, fake_booking: FakeBookingService
) -> None:
    assert INVENTORY.name == "INVENTORY"
    await ensure_stream(js, INVENTORY)
    fake_booking.auto_complete = False
    gateway = await start_gateway(database_url)  # the default GATEWAY_STREAMS, INVENTORY included
    assert gateway.store is not None
    store = gateway.store
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        stub: Any = gateway_pb2_grpc.BookingGatewayServiceStub(channel)
        created = (
            await stub.CreateBooking(
                gw.CreateBookingRequest(
                    user_id="u1",
                    amount_cents=4200,
                    currency="EUR",
                    payment_token="tok_visa",
                    resource_id="room-1",
                    quantity=2,
                )
            )
        ).booking
        booking_id, correlation = created.booking_id, created.correlation_id
        await fake_booking.settled()
        booked = fake_booking.bookings[booking_id]
        assert booked.created is not None
        capacity = fact(
            inventory_events.InventoryCapacitySet(resource_id="room-1", capacity=5, set_at=ts(1)),
            correlation_id="wf-capacity",
            causation_id="",
        )
        await publish(js, capacity)
        reserved = fact(
            inventory_events.InventoryReserved(booking_id=booking_id, resource_id="room-1", quantity=2),
            correlation_id=correlation,
            causation_id=booked.created.id,
        )
        await publish(js, reserved)
        await fake_booking.complete(booking_id)  # PaymentSucceeded, BookingConfirmed
        cancelled = (await stub.CancelBooking(gw.CancelBookingRequest(booking_id=booking_id))).booking
        assert cancelled.status == gw.BOOKING_STATUS_CANCELLED
        assert (cancelled.resource_id, cancelled.quantity) == ("room-1", 2)
        cancel_fact = booked.facts[-1]
        released = fact(
            inventory_events.InventoryReleased(
                booking_id=booking_id, resource_id="room-1", quantity=2, reason="cancelled_by_user"
            ),
            correlation_id=correlation,
            causation_id=cancel_fact.id,
        )
        refunded = fact(
            payment_events.PaymentRefunded(
                refund_id="r1",
                payment_id=booked.payment_id,
                booking_id=booking_id,
                amount_cents=4200,
                currency="EUR",
                reason="cancelled_by_user",
            ),
            correlation_id=correlation,
            causation_id=cancel_fact.id,
        )
        await publish(js, released)
        await publish(js, refunded)

        async def whole_trace() -> list[gw.TraceEvent]:
            trace = await stub.GetWorkflowTrace(gw.GetWorkflowTraceRequest(booking_id=booking_id))
            return list(trace.events) if len(trace.events) == 7 else []

        events = await eventually(whole_trace, timeout=15)
        types = [e.event_type.rsplit(".", 1)[1] for e in events]
        assert types[:5] == [
            "BookingCreated",
            "InventoryReserved",
            "PaymentSucceeded",
            "BookingConfirmed",
            "BookingCancelled",
        ]
        # The two compensations react to the same BookingCancelled: either may come first.
        assert sorted(types[5:]) == ["InventoryReleased", "PaymentRefunded"]
        streams = {e.event_type.rsplit(".", 1)[1]: e.stream for e in events}
        assert streams["InventoryReserved"] == streams["InventoryReleased"] == "INVENTORY"
        assert streams["PaymentRefunded"] == "PAYMENT"
        by_id = {e.event_id: e for e in events}
        assert by_id[refunded.id].causation_id == by_id[released.id].causation_id == cancel_fact.id

        # The operator's capacity change is a workflow of its own.
        capacity_trace = await stub.GetWorkflowTrace(gw.GetWorkflowTraceRequest(correlation_id="wf-capacity"))
        assert [e.event_type for e in capacity_trace.events] == ["choreo.inventory.v1.InventoryCapacitySet"]

    view = await store.get(booking_id)
    assert view is not None and view.status is Status.CANCELLED
    assert (view.cancellation_reason, view.resource_id, view.quantity) == ("cancelled_by_user", "room-1", 2)
    feed = next(f for f in gateway.feeds if f.stream == "INVENTORY")
    assert feed.position == 3
    # Every fact was one the projection reads (an unknown payment or inventory type is poison).
    assert {f.stream: f.dead_lettered for f in gateway.feeds} == {
        "BOOKING": 0,
        "PAYMENT": 0,
        "NOTIFICATION": 0,
        "INVENTORY": 0,
    }


async def test_a_saga_fact_on_another_services_subject_is_dead_lettered(
    start_gateway: StartGateway, sqlite_url: str, js: JetStreamContext, fake_booking: FakeBookingService
) -> None:
    await ensure_stream(js, INVENTORY)
    gateway = await start_gateway(sqlite_url)
    assert gateway.store is not None
    store = gateway.store
    # Inventory (allowed on inventory.> only) says a payment was refunded, and moves nothing.
    forged = Envelope.wrap(
        payment_events.PaymentRefunded(refund_id="r", payment_id="p", booking_id="victim"),
        source="inventory",
        subject="inventory.released",
        correlation_id="wf-forged",
    )
    await publish(js, forged)
    honest = fact(
        inventory_events.InventoryReleased(booking_id="b2", resource_id="room-1", quantity=1),
        correlation_id="wf-b2",
        causation_id="",
    )
    await publish(js, honest)

    async def projected() -> bool:
        return await store.get("b2") is not None

    await eventually(projected, timeout=15)
    feed = next(f for f in gateway.feeds if f.stream == "INVENTORY")
    assert feed.dead_lettered == 1
    assert await store.get("victim") is None
    dlq = await js.pull_subscribe(dlq_subject("INVENTORY", "gateway-projection"), stream=DLQ_STREAM)
    (copy,) = await dlq.fetch(1, timeout=5)
    assert copy.headers is not None
    assert "(expected choreo.inventory.v1.InventoryReleased)" in copy.headers[H_ERROR]
