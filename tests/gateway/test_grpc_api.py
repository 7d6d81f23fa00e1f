"""The gRPC API against a real nats-server, with a fake booking service answering."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from choreo.envelope import H_CORRELATION, H_ID
from choreo.gateway.v1 import gateway_pb2 as gw
from gateway.build import GatewayService
from gateway.readmodel.model import Change, Status
from gateway.readmodel.store import WriteBatch
from tests.gateway.fakes import FakeBookingService

# The generated stub is typed for the synchronous API; the tests use grpc.aio.
Stub = Any


def req(
    token: str = "tok_visa", user: str = "user-1", key: str = "", amount: int = 4200
) -> gw.CreateBookingRequest:
    return gw.CreateBookingRequest(
        user_id=user, amount_cents=amount, currency="EUR", payment_token=token, idempotency_key=key
    )


def error_field(err: grpc.aio.AioRpcError) -> str:
    metadata: Any = err.trailing_metadata() or ()
    return next((str(value) for key, value in metadata if key == "error-field"), "")


async def watch_until_terminal(stub: Stub, booking_id: str) -> list[gw.Booking]:
    return [
        u.booking async for u in stub.WatchBooking(gw.WatchBookingRequest(booking_id=booking_id), timeout=10)
    ]


async def test_create_then_read_at_once(stub: Stub, fake_booking: FakeBookingService) -> None:
    fake_booking.auto_complete = False
    booking = (await stub.CreateBooking(req())).booking
    assert booking.status == gw.BOOKING_STATUS_PENDING
    assert (booking.user_id, booking.amount_cents, booking.currency) == ("user-1", 4200, "EUR")
    assert booking.booking_id and booking.correlation_id and booking.created_at.seconds > 0
    # The read model has it before the client gets the answer: no 404 window.
    got = (await stub.GetBooking(gw.GetBookingRequest(booking_id=booking.booking_id))).booking
    assert got.booking_id == booking.booking_id and got.status == gw.BOOKING_STATUS_PENDING
    # The command carried a fresh command id and the workflow's correlation id.
    assert fake_booking.last_headers[H_CORRELATION] == booking.correlation_id
    assert fake_booking.last_headers[H_ID] and fake_booking.last_headers[H_ID] != booking.correlation_id


async def test_client_chosen_correlation_id(stub: Stub, fake_booking: FakeBookingService) -> None:
    call = stub.CreateBooking(req(), metadata=(("x-correlation-id", "my-workflow-1"),))
    booking = (await call).booking
    assert booking.correlation_id == "my-workflow-1"
    assert fake_booking.last_headers[H_CORRELATION] == "my-workflow-1"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.CreateBooking(req(), metadata=(("x-correlation-id", "has spaces"),))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "correlation_id" in (err.value.details() or "")


@pytest.mark.parametrize(
    "bad,field",
    [
        (req(user=""), "user_id"),
        (req(amount=0), "amount_cents"),
        (req(amount=-5), "amount_cents"),
        (req(amount=10**12), "amount_cents"),
        (
            gw.CreateBookingRequest(user_id="u", amount_cents=1, currency="euro", payment_token="tok_visa"),
            "currency",
        ),
        (req(token="4242424242424242"), "payment_token"),
        (req(user="u" * 200), "user_id"),
        (req(key="k" * 200), "idempotency_key"),
    ],
)
async def test_invalid_requests_name_the_field_and_send_nothing(
    stub: Stub, fake_booking: FakeBookingService, bad: gw.CreateBookingRequest, field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.CreateBooking(bad)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (err.value.details() or "").startswith(f"{field}:")
    assert error_field(err.value) == field
    assert fake_booking.requests == 0


async def test_idempotency_key_is_passed_through(stub: Stub, fake_booking: FakeBookingService) -> None:
    first = stub.CreateBooking(req(key="order-77"))
    booking = (await first).booking
    again = stub.CreateBooking(req(key="order-77"))
    replayed = (await again).booking
    assert replayed.booking_id == booking.booking_id
    assert ("idempotent-replayed", "true") in tuple(await again.initial_metadata() or ())
    assert ("idempotent-replayed", "true") not in tuple(await first.initial_metadata() or ())
    assert len(fake_booking.bookings) == 1
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.CreateBooking(req(key="order-77", amount=1))
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "idempotency_key" in (err.value.details() or "")


async def test_get_unknown_or_invalid_booking(stub: Stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GetBooking(gw.GetBookingRequest(booking_id="no-such-booking"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GetBooking(gw.GetBookingRequest(booking_id=""))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_watch_streams_each_change_and_ends_when_terminal(
    stub: Stub, fake_booking: FakeBookingService
) -> None:
    fake_booking.auto_complete = False
    booking = (await stub.CreateBooking(req(token="tok_chargeDeclined"))).booking
    updates: list[gw.Booking] = []
    call = stub.WatchBooking(gw.WatchBookingRequest(booking_id=booking.booking_id), timeout=10)
    first = await call.read()
    updates.append(first.booking)
    await fake_booking.settled()  # BookingCreated is on the stream
    await fake_booking.complete(booking.booking_id)
    while (update := await call.read()) is not grpc.aio.EOF:  # type: ignore[attr-defined]
        updates.append(update.booking)
    assert updates[0].status == gw.BOOKING_STATUS_PENDING
    last = updates[-1]
    assert last.status == gw.BOOKING_STATUS_CANCELLED and last.cancellation_reason == "card_declined"
    assert all(u.status == gw.BOOKING_STATUS_PENDING for u in updates[:-1])
    assert len({u.SerializeToString() for u in updates}) == len(updates)  # only changes are sent
    # A terminal booking: its state, then the end.
    again = await watch_until_terminal(stub, booking.booking_id)
    assert len(again) == 1 and again[0].status == gw.BOOKING_STATUS_CANCELLED


async def test_get_with_wait_holds_until_terminal(stub: Stub, fake_booking: FakeBookingService) -> None:
    fake_booking.auto_complete = False
    booking = (await stub.CreateBooking(req(token="tok_chargeDeclined"))).booking
    await fake_booking.settled()
    # Not terminal yet: a short wait answers with the current state when time is up.
    short = gw.GetBookingRequest(booking_id=booking.booking_id, wait=Duration(nanos=200_000_000))
    assert (await stub.GetBooking(short)).booking.status == gw.BOOKING_STATUS_PENDING

    long = gw.GetBookingRequest(booking_id=booking.booking_id, wait=Duration(seconds=8))
    waiting = asyncio.ensure_future(stub.GetBooking(long, timeout=10))
    await asyncio.sleep(0.1)
    assert not waiting.done()
    await fake_booking.complete(booking.booking_id)
    got = (await asyncio.wait_for(waiting, 5)).booking
    assert got.status == gw.BOOKING_STATUS_CANCELLED and got.cancellation_reason == "card_declined"
    # A wait of zero is a plain read.
    zero = gw.GetBookingRequest(booking_id=booking.booking_id, wait=Duration())
    assert (await stub.GetBooking(zero)).booking.status == gw.BOOKING_STATUS_CANCELLED


@pytest.mark.parametrize("wait", [Duration(seconds=-1), Duration(seconds=3601)])
async def test_get_with_a_wait_out_of_range_names_the_field(stub: Stub, wait: Duration) -> None:
    booking = (await stub.CreateBooking(req())).booking
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GetBooking(gw.GetBookingRequest(booking_id=booking.booking_id, wait=wait))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_field(err.value) == "wait"


async def test_watch_of_an_unknown_booking_is_not_found(stub: Stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await watch_until_terminal(stub, "no-such-booking")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_trace_lists_the_workflow_in_causal_order(stub: Stub, fake_booking: FakeBookingService) -> None:
    booking = (await stub.CreateBooking(req())).booking
    await watch_until_terminal(stub, booking.booking_id)
    booked = fake_booking.bookings[booking.booking_id]
    by_booking = await stub.GetWorkflowTrace(gw.GetWorkflowTraceRequest(booking_id=booking.booking_id))
    assert by_booking.correlation_id == booking.correlation_id
    assert [e.event_type for e in by_booking.events] == [
        "choreo.booking.v1.BookingCreated",
        "choreo.payment.v1.PaymentSucceeded",
        "choreo.booking.v1.BookingConfirmed",
    ]
    assert [e.event_id for e in by_booking.events] == [f.id for f in booked.facts]
    created, paid, confirmed = by_booking.events
    assert created.causation_id == booked.command_id
    assert paid.causation_id == created.event_id and confirmed.causation_id == paid.event_id
    assert (paid.stream, paid.subject, paid.source) == ("PAYMENT", "payment.succeeded", "payment")
    assert created.stream_sequence >= 1 and created.occurred_at.seconds > 0
    by_correlation = await stub.GetWorkflowTrace(
        gw.GetWorkflowTraceRequest(correlation_id=booking.correlation_id)
    )
    assert by_correlation == by_booking
    for missing in (
        gw.GetWorkflowTraceRequest(booking_id="nope"),
        gw.GetWorkflowTraceRequest(correlation_id="nope"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetWorkflowTrace(missing)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GetWorkflowTrace(gw.GetWorkflowTraceRequest())
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_list_filters_and_pages(stub: Stub, fake_booking: FakeBookingService) -> None:
    made = []
    for i in range(7):
        token = "tok_visa" if i % 2 == 0 else "tok_chargeDeclined"
        made.append((await stub.CreateBooking(req(token=token, user=f"user-{i % 2}"))).booking)
    for booking in made:
        await watch_until_terminal(stub, booking.booking_id)

    pages: list[list[str]] = []
    token = ""
    while True:
        resp = await stub.ListBookings(gw.ListBookingsRequest(page_size=3, page_token=token))
        pages.append([b.booking_id for b in resp.bookings])
        token = resp.next_page_token
        if not token:
            break
    assert [len(p) for p in pages] == [3, 3, 1]
    assert list(itertools.chain(*pages)) == [b.booking_id for b in reversed(made)]  # newest first

    user0 = await stub.ListBookings(gw.ListBookingsRequest(user_id="user-0"))
    assert [b.booking_id for b in user0.bookings] == [made[i].booking_id for i in (6, 4, 2, 0)]
    assert user0.next_page_token == ""
    cancelled = await stub.ListBookings(gw.ListBookingsRequest(status=gw.BOOKING_STATUS_CANCELLED))
    assert {b.booking_id for b in cancelled.bookings} == {made[i].booking_id for i in (1, 3, 5)}
    assert all(b.cancellation_reason == "card_declined" for b in cancelled.bookings)
    none = await stub.ListBookings(
        gw.ListBookingsRequest(user_id="user-0", status=gw.BOOKING_STATUS_CANCELLED)
    )
    assert list(none.bookings) == []

    first = await stub.ListBookings(gw.ListBookingsRequest(page_size=2))
    for bad, field in (
        (gw.ListBookingsRequest(page_size=501), "page_size"),
        (gw.ListBookingsRequest(page_size=-1), "page_size"),
        (gw.ListBookingsRequest(page_token="not-a-token"), "page_token"),
        (gw.ListBookingsRequest(page_token=first.next_page_token, user_id="user-0"), "page_token"),
        (gw.ListBookingsRequest(status=42), "status"),  # type: ignore[arg-type]
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.ListBookings(bad)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (err.value.details() or "").startswith(field)


async def test_health_and_reflection(gateway: GatewayService) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)

        async def serving(service: str) -> bool:
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
            return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while not await serving(""):
            assert loop.time() < deadline, "gRPC health never became SERVING"
            await asyncio.sleep(0.05)
        assert await serving("choreo.gateway.v1.BookingGatewayService")

        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        names = set()
        async for response in reflection.ServerReflectionInfo(iter([request])):
            names |= {s.name for s in response.list_services_response.service}
        assert {"choreo.gateway.v1.BookingGatewayService", "grpc.health.v1.Health"} <= names


async def test_list_default_page_size_is_50(stub: Stub, gateway: GatewayService) -> None:
    assert gateway.store is not None
    changes = [
        Change(booking_id=f"b{i:02}", at_us=i + 1, status=Status.PENDING, user_id="bulk", created_at_us=i + 1)
        for i in range(55)
    ]
    await gateway.store.write(WriteBatch(changes=changes))
    first = await stub.ListBookings(gw.ListBookingsRequest(user_id="bulk"))
    assert len(first.bookings) == 50 and first.bookings[0].booking_id == "b54" and first.next_page_token
    rest = await stub.ListBookings(gw.ListBookingsRequest(user_id="bulk", page_token=first.next_page_token))
    assert [b.booking_id for b in rest.bookings] == ["b04", "b03", "b02", "b01", "b00"]
    assert rest.next_page_token == ""
    biggest = await stub.ListBookings(gw.ListBookingsRequest(user_id="bulk", page_size=500))
    assert len(biggest.bookings) == 55
