"""``email`` of CreateBooking: checked at the gateway, carried to the booking command (issue 11)."""

from __future__ import annotations

from typing import Any

import grpc
import httpx
import pytest

from choreo.gateway.v1 import gateway_pb2 as gw
from tests.gateway.fakes import FakeBookingService

Stub = Any
BODY: dict[str, Any] = {
    "user_id": "user-1",
    "amount_cents": 4200,
    "currency": "EUR",
    "payment_token": "tok_visa",
}
MALFORMED = [
    "not-an-address",
    "two@@example.com",
    "name@localhost",
    "Name <name@example.com>",
    "name@example.com\r\nBcc: everyone@example.com",
    f"{'a' * 250}@example.com",
]


def error_field(err: grpc.aio.AioRpcError) -> str:
    metadata: Any = err.trailing_metadata() or ()
    return next((str(value) for key, value in metadata if key == "error-field"), "")


async def test_email_reaches_the_command_over_grpc(stub: Stub, fake_booking: FakeBookingService) -> None:
    booking = (await stub.CreateBooking(gw.CreateBookingRequest(**BODY, email="ada@example.com"))).booking
    assert fake_booking.last_command is not None and fake_booking.last_command.email == "ada@example.com"
    assert booking.booking_id in fake_booking.bookings
    await stub.CreateBooking(gw.CreateBookingRequest(**BODY))
    assert fake_booking.last_command.email == ""  # none given: none sent (no emails)


async def test_email_reaches_the_command_over_http(
    http: httpx.AsyncClient, fake_booking: FakeBookingService
) -> None:
    response = await http.post("/v1/bookings", json={**BODY, "email": "grace.hopper+tag@mail.example.org"})
    assert response.status_code == 201, response.text
    assert fake_booking.last_command is not None
    assert fake_booking.last_command.email == "grace.hopper+tag@mail.example.org"


@pytest.mark.parametrize("email", MALFORMED)
async def test_a_malformed_email_is_400_naming_it_and_sends_nothing(
    http: httpx.AsyncClient, stub: Stub, fake_booking: FakeBookingService, email: str
) -> None:
    response = await http.post("/v1/bookings", json={**BODY, "email": email})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "INVALID_ARGUMENT"
    assert response.json()["error"]["field"] == "email"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.CreateBooking(gw.CreateBookingRequest(**BODY, email=email))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and error_field(err.value) == "email"
    assert (err.value.details() or "").startswith("email: ")
    assert fake_booking.requests == 0


async def test_openapi_shows_the_email_field(http: httpx.AsyncClient) -> None:
    spec = (await http.get("/openapi.json")).json()
    email = spec["components"]["schemas"]["CreateBookingBody"]["properties"]["email"]
    assert email["type"] == "string" and "email" in email["description"]
