"""A gateway client for the tests: create bookings (retrying like a good client), wait for outcomes."""

from __future__ import annotations

import asyncio

import grpc

from choreo.gateway.v1 import gateway_pb2 as gw
from choreo.gateway.v1 import gateway_pb2_grpc

#: The outcome each simulator token leads to.
EXPECTED = {
    "tok_visa": gw.BOOKING_STATUS_CONFIRMED,
    "tok_chargeDeclined": gw.BOOKING_STATUS_CANCELLED,
}
TERMINAL = {gw.BOOKING_STATUS_CONFIRMED, gw.BOOKING_STATUS_CANCELLED}
RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}


def stub(channel: grpc.aio.Channel) -> gateway_pb2_grpc.BookingGatewayServiceAsyncStub:
    return gateway_pb2_grpc.BookingGatewayServiceStub(channel)


async def create(
    client: gateway_pb2_grpc.BookingGatewayServiceAsyncStub,
    token: str,
    key: str,
    deadline: float = 60.0,
    email: str = "",
    resource_id: str = "",
    quantity: int = 0,
) -> gw.Booking:
    """CreateBooking, retried with the same idempotency key while the system is unavailable.

    With ``resource_id``, inventory reserves ``quantity`` units (0 means 1) before payment charges."""
    request = gw.CreateBookingRequest(
        user_id="k8s-user",
        amount_cents=1299,
        currency="EUR",
        payment_token=token,
        idempotency_key=key,
        email=email,
        resource_id=resource_id,
        quantity=quantity,
    )
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    delay = 0.05
    while True:
        try:
            return (await client.CreateBooking(request, timeout=10)).booking
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in RETRYABLE or loop.time() > end:
                raise
        await asyncio.sleep(delay)
        delay = min(delay * 2, 1.0)


async def wait_terminal(
    client: gateway_pb2_grpc.BookingGatewayServiceAsyncStub, booking_id: str, timeout: float = 60.0
) -> gw.Booking:
    """Polls GetBooking (retrying through outages) until the booking is CONFIRMED or CANCELLED."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    last: gw.Booking | None = None
    while loop.time() < end:
        try:
            last = (await client.GetBooking(gw.GetBookingRequest(booking_id=booking_id), timeout=5)).booking
            if last.status in TERMINAL:
                return last
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in RETRYABLE:
                raise
        await asyncio.sleep(0.1)
    raise AssertionError(f"booking {booking_id} not terminal after {timeout}s: {last}")


async def cancel(client: gateway_pb2_grpc.BookingGatewayServiceAsyncStub, booking_id: str) -> gw.Booking:
    """CancelBooking once (a retry after a lost answer would be FAILED_PRECONDITION): the booking,
    now CANCELLED with reason ``cancelled_by_user``."""
    request = gw.CancelBookingRequest(booking_id=booking_id)
    return (await client.CancelBooking(request, timeout=10)).booking
