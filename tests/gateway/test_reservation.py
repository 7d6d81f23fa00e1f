"""CreateBooking's resource_id and quantity (issue 12): checked by the gateway, carried there and back."""

from __future__ import annotations

from typing import Any

import grpc
import httpx
import pytest

from booking.requests import check_resource as validate_reservation
from choreo.gateway.v1 import gateway_pb2 as gw
from gateway.build import GatewayService
from tests.gateway.fakes import FakeBookingService
from tests.support import eventually

Stub = Any
BODY = {"user_id": "user-1", "amount_cents": 4200, "currency": "EUR", "payment_token": "tok_visa"}


def request(**fields: Any) -> gw.CreateBookingRequest:
    return gw.CreateBookingRequest(**{**BODY, **fields})


@pytest.mark.parametrize(
    ("resource_id", "quantity", "field"),
    [
        ("room 1", 0, "resource_id"),
        ("r" * 65, 0, "resource_id"),
        ("room/1", 1, "resource_id"),
        ("rööm", 1, "resource_id"),
        ("room-1", -1, "quantity"),
        ("room-1", 1001, "quantity"),
        ("", 2, "quantity"),
        ("", -1, "quantity"),
    ],
)
def test_invalid_reservations_name_their_field(resource_id: str, quantity: int, field: str) -> None:
    error = validate_reservation(resource_id, quantity)
    assert error is not None and error.field == field


@pytest.mark.parametrize(
    ("resource_id", "quantity"), [("", 0), ("room-1", 0), ("r" * 64, 1000), ("A.b_c:d-9", 7)]
)
def test_valid_reservations(resource_id: str, quantity: int) -> None:
    assert validate_reservation(resource_id, quantity) is None


async def test_grpc_create_with_a_resource(
    stub: Stub, gateway: GatewayService, fake_booking: FakeBookingService
) -> None:
    fake_booking.auto_complete = False
    booking = (await stub.CreateBooking(request(resource_id="room-1", quantity=3))).booking
    assert (booking.resource_id, booking.quantity) == ("room-1", 3)
    command = fake_booking.last_command
    assert command is not None and (command.resource_id, command.quantity) == ("room-1", 3)
    # 0 means 1: the booking service says so, and the gateway shows what it says.
    one = (await stub.CreateBooking(request(resource_id="room-1"))).booking
    assert (one.resource_id, one.quantity) == ("room-1", 1)
    plain = (await stub.CreateBooking(request())).booking
    assert (plain.resource_id, plain.quantity) == ("", 0)

    # The projection of BookingCreated carries them too (a read model rebuilt by replay has them).
    assert gateway.store is not None
    store = gateway.store

    async def projected() -> bool:
        return len(await store.trace(booking.correlation_id)) == 1

    await eventually(projected)
    view = await store.get(booking.booking_id)
    assert view is not None and (view.resource_id, view.quantity) == ("room-1", 3)
    listed = await stub.ListBookings(gw.ListBookingsRequest())
    assert {(b.resource_id, b.quantity) for b in listed.bookings} == {("room-1", 3), ("room-1", 1), ("", 0)}


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"resource_id": "no spaces"}, "resource_id"),
        ({"resource_id": "x" * 65}, "resource_id"),
        ({"resource_id": "room-1", "quantity": -1}, "quantity"),
        ({"resource_id": "room-1", "quantity": 1001}, "quantity"),
        ({"quantity": 2}, "quantity"),
    ],
)
async def test_grpc_invalid_reservation(
    stub: Stub, fake_booking: FakeBookingService, fields: dict[str, Any], field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.CreateBooking(request(**fields))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    metadata: Any = err.value.trailing_metadata() or ()
    assert dict(metadata).get("error-field") == field
    assert (err.value.details() or "").startswith(f"{field}: ")
    assert fake_booking.requests == 0  # refused before asking


async def test_http_create_with_a_resource(http: httpx.AsyncClient, fake_booking: FakeBookingService) -> None:
    fake_booking.auto_complete = False
    response = await http.post("/v1/bookings", json={**BODY, "resource_id": "room-1", "quantity": 2})
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["resource_id"], body["quantity"]) == ("room-1", 2)
    read = (await http.get(f"/v1/bookings/{body['booking_id']}")).json()
    assert (read["resource_id"], read["quantity"]) == ("room-1", 2)
    plain = (await http.post("/v1/bookings", json=BODY)).json()
    assert (plain["resource_id"], plain["quantity"]) == ("", 0)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"resource_id": "no spaces"}, "resource_id"),
        ({"resource_id": "room-1", "quantity": -1}, "quantity"),
        ({"resource_id": "room-1", "quantity": 1001}, "quantity"),
        ({"resource_id": "room-1", "quantity": 2**40}, "quantity"),
        ({"resource_id": "room-1", "quantity": "2"}, "quantity"),
        ({"resource_id": "room-1", "quantity": 1.5}, "quantity"),
        ({"resource_id": "room-1", "quantity": True}, "quantity"),
        ({"resource_id": 7}, "resource_id"),
        ({"quantity": 2}, "quantity"),
    ],
)
async def test_http_invalid_reservation(
    http: httpx.AsyncClient, fake_booking: FakeBookingService, fields: dict[str, Any], field: str
) -> None:
    response = await http.post("/v1/bookings", json={**BODY, **fields})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("INVALID_ARGUMENT", field)
    assert fake_booking.requests == 0


async def test_openapi_documents_the_new_fields(http: httpx.AsyncClient) -> None:
    schemas = (await http.get("/openapi.json")).json()["components"]["schemas"]
    assert {"resource_id", "quantity"} <= set(schemas["CreateBookingBody"]["properties"])
    assert {"resource_id", "quantity"} <= set(schemas["BookingJson"]["required"])
