"""Small client helpers for the gateway's gRPC API."""

from __future__ import annotations

import asyncio

import grpc

from choreo.gateway.v1 import gateway_pb2 as gw
from choreo.gateway.v1 import gateway_pb2_grpc

#: What each test token must lead to: (status, cancellation reason).
EXPECTED = {
    "tok_visa": (gw.BOOKING_STATUS_CONFIRMED, ""),
    "tok_chargeDeclined": (gw.BOOKING_STATUS_CANCELLED, "card_declined"),
    "tok_chargeDeclinedInsufficientFunds": (gw.BOOKING_STATUS_CANCELLED, "insufficient_funds"),
    "tok_unknown42": (gw.BOOKING_STATUS_CANCELLED, "invalid_payment_token"),
}
TERMINAL = {gw.BOOKING_STATUS_CONFIRMED, gw.BOOKING_STATUS_CANCELLED}


def request(token: str, user: str = "user-1", key: str = "", amount: int = 4200) -> gw.CreateBookingRequest:
    return gw.CreateBookingRequest(
        user_id=user, amount_cents=amount, currency="EUR", payment_token=token, idempotency_key=key
    )


async def wait_terminal(
    stub: gateway_pb2_grpc.BookingGatewayServiceStub, booking_id: str, timeout: float = 30.0
) -> gw.Booking:
    """Follows WatchBooking until the booking is terminal (the stream then ends)."""
    last: gw.Booking | None = None
    async for update in stub.WatchBooking(gw.WatchBookingRequest(booking_id=booking_id), timeout=timeout):
        last = update.booking
    assert last is not None and last.status in TERMINAL, f"not terminal: {last}"
    return last


async def create_with_retry(
    stub: gateway_pb2_grpc.BookingGatewayServiceStub,
    req: gw.CreateBookingRequest,
    deadline: float = 60.0,
    retried: list[str] | None = None,
) -> gw.Booking:
    """Retries UNAVAILABLE with the same idempotency key, as a well-behaved client does.

    Each retry's cause is appended to ``retried`` when given.
    """
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    delay = 0.05
    while True:
        try:
            return (await stub.CreateBooking(req, timeout=10)).booking
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise
            if loop.time() > end:
                raise
            if retried is not None:
                retried.append(exc.code().name)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
