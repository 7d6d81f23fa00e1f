"""End to end: every service a separate process, through the gateway's gRPC and HTTP APIs."""

from __future__ import annotations

import asyncio
import time

import grpc
import httpx
import pytest

from choreo.gateway.v1 import gateway_pb2 as gw
from choreo.gateway.v1 import gateway_pb2_grpc
from tests.e2e.client import EXPECTED, create_with_retry, request, wait_terminal
from tests.e2e.stack import Stack

Stub = gateway_pb2_grpc.BookingGatewayServiceStub
STATUS_NAME = {v: gw.BookingStatus.Name(v) for v in gw.BookingStatus.values()}


async def check_outcomes_over_grpc(stub: Stub) -> None:
    created = {tok: (await stub.CreateBooking(request(tok))).booking for tok in EXPECTED}
    for tok, booking in created.items():
        assert booking.status == gw.BOOKING_STATUS_PENDING
        assert booking.correlation_id
        final = await wait_terminal(stub, booking.booking_id)
        assert (final.status, final.cancellation_reason) == EXPECTED[tok], tok
        assert bool(final.payment_id) is (tok == "tok_visa") or final.status == gw.BOOKING_STATUS_CANCELLED
        assert (final.amount_cents, final.currency, final.user_id) == (4200, "EUR", "user-1")


async def test_each_token_reaches_its_terminal_state_over_grpc(stub: Stub) -> None:
    await check_outcomes_over_grpc(stub)


async def test_each_token_reaches_its_terminal_state_on_postgres(pg_stack: Stack) -> None:
    async with grpc.aio.insecure_channel(pg_stack.grpc_target) as channel:
        await check_outcomes_over_grpc(gateway_pb2_grpc.BookingGatewayServiceStub(channel))


async def test_each_token_reaches_its_terminal_state_over_http(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.http_base, timeout=30) as http:
        for tok, (status, reason) in EXPECTED.items():
            body = {"user_id": "web-1", "amount_cents": 990, "currency": "USD", "payment_token": tok}
            created = await http.post("/v1/bookings", json=body)
            assert created.status_code == 201, created.text
            booking = created.json()
            assert created.headers["location"] == f"/v1/bookings/{booking['booking_id']}"
            assert booking["status"] == "BOOKING_STATUS_PENDING"
            # A read right after create finds it (no 404 window) ...
            assert (await http.get(created.headers["location"])).status_code == 200
            # ... and ?wait holds the request until the outcome is known.
            final = (await http.get(created.headers["location"], params={"wait": 20})).json()
            assert final["status"] == STATUS_NAME[status], tok
            assert final["cancellation_reason"] == reason


async def test_trace_lists_the_workflow_in_causal_order(stack: Stack, stub: Stub) -> None:
    booking = (await stub.CreateBooking(request("tok_chargeDeclined"))).booking
    await wait_terminal(stub, booking.booking_id)
    trace = await stub.GetWorkflowTrace(gw.GetWorkflowTraceRequest(booking_id=booking.booking_id))
    assert trace.correlation_id == booking.correlation_id
    assert [e.event_type for e in trace.events] == [
        "choreo.booking.v1.BookingCreated",
        "choreo.payment.v1.PaymentFailed",
        "choreo.booking.v1.BookingCancelled",
    ]
    assert [e.source for e in trace.events] == ["booking", "payment", "booking"]
    assert [e.stream for e in trace.events] == ["BOOKING", "PAYMENT", "BOOKING"]
    assert [e.subject for e in trace.events] == ["booking.created", "payment.failed", "booking.cancelled"]
    for cause, effect in zip(trace.events, trace.events[1:], strict=False):
        assert effect.causation_id == cause.event_id
        assert effect.stream_sequence > 0
    async with httpx.AsyncClient(base_url=stack.http_base) as http:
        by_booking = (await http.get(f"/v1/bookings/{booking.booking_id}/trace")).json()
        by_correlation = (await http.get(f"/v1/traces/{booking.correlation_id}")).json()
    assert by_booking == by_correlation
    assert [e["event_id"] for e in by_booking["events"]] == [e.event_id for e in trace.events]


async def test_bad_input_is_refused_naming_the_field_and_nothing_is_written(stack: Stack, stub: Stub) -> None:
    bad = [
        (request("tok_visa", user=""), "user_id"),
        (request("tok_visa", amount=0), "amount_cents"),
        (request("tok_visa", amount=10**15), "amount_cents"),
        (
            gw.CreateBookingRequest(user_id="u", amount_cents=5, currency="EURO", payment_token="tok_visa"),
            "currency",
        ),
        (request("card_4242"), "payment_token"),
        (request("tok_visa", key="k" * 300), "idempotency_key"),
    ]
    for req, field in bad:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.CreateBooking(req)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field in (err.value.details() or "")
    async with httpx.AsyncClient(base_url=stack.http_base) as http:
        resp = await http.post(
            "/v1/bookings",
            json={"user_id": "u", "amount_cents": 5, "currency": "eu", "payment_token": "tok_visa"},
        )
        assert resp.status_code in (400, 422)
        assert "currency" in resp.text
        resp = await http.post(
            "/v1/bookings", json={"user_id": "u", "amount_cents": "lots", "currency": "EUR"}
        )
        assert resp.status_code in (400, 422)
        assert "amount_cents" in resp.text
    listed = await stub.ListBookings(gw.ListBookingsRequest())
    assert list(listed.bookings) == []


async def test_booking_service_down_fails_fast_and_retries_are_idempotent(stack: Stack, stub: Stub) -> None:
    await asyncio.to_thread(stack.terminate, "booking")
    req = request("tok_visa", user="retrier", key="order-77")
    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.CreateBooking(req, timeout=30)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert time.monotonic() - started < 3
    async with httpx.AsyncClient(base_url=stack.http_base) as http:
        body = {"user_id": "retrier", "amount_cents": 4200, "currency": "EUR", "payment_token": "tok_visa"}
        resp = await http.post("/v1/bookings", json=body, headers={"Idempotency-Key": "order-77"})
        assert resp.status_code == 503
    await asyncio.to_thread(stack.start, "booking")
    first = await create_with_retry(stub, req)
    again = await asyncio.gather(*(stub.CreateBooking(req) for _ in range(3)))
    assert {r.booking.booking_id for r in again} == {first.booking_id}
    await wait_terminal(stub, first.booking_id)
    listed = await stub.ListBookings(gw.ListBookingsRequest(user_id="retrier"))
    assert [b.booking_id for b in listed.bookings] == [first.booking_id]


async def _all_bookings(stub: Stub) -> list[gw.Booking]:
    out: list[gw.Booking] = []
    token = ""
    while True:
        page = await stub.ListBookings(gw.ListBookingsRequest(page_size=7, page_token=token))
        out.extend(page.bookings)
        token = page.next_page_token
        if not token:
            return out


async def test_deleted_read_model_is_rebuilt_by_replay(stack: Stack, stub: Stub) -> None:
    tokens = list(EXPECTED) * 5
    created = [
        (await stub.CreateBooking(request(tok, user=f"u{i % 3}"))).booking for i, tok in enumerate(tokens)
    ]
    for booking in created:
        await wait_terminal(stub, booking.booking_id)
    before = await _all_bookings(stub)
    traces_before = [
        await stub.GetWorkflowTrace(gw.GetWorkflowTraceRequest(booking_id=b.booking_id)) for b in created[:4]
    ]
    assert len(before) == len(tokens)

    await asyncio.to_thread(stack.terminate, "gateway")
    for path in stack.root.glob("gateway.db*"):
        path.unlink()
    await asyncio.to_thread(stack.start, "gateway")

    async with grpc.aio.insecure_channel(stack.grpc_target) as channel:
        fresh = gateway_pb2_grpc.BookingGatewayServiceStub(channel)
        after = await _all_bookings(fresh)
        traces_after = [
            await fresh.GetWorkflowTrace(gw.GetWorkflowTraceRequest(booking_id=b.booking_id))
            for b in created[:4]
        ]
    assert after == before
    assert traces_after == traces_before
