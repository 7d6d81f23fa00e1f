"""A hostile client against the merged gateway's HTTP API (issue 9, second look).

Each test is an attack that worked against main at 4c00eec, the merge of the
five parts of issue 9, and fails there:

- a JSON string holding a lone surrogate (``"\\ud800"``) made the protobuf
  message constructor raise: a 500 for bad input;
- ``GET /v1/bookings/`` answered 307 with a ``Location`` built from the
  request's ``Host`` header (an open redirect through a forged Host, and an
  answer outside the documented error shape);
- a body Starlette cannot parse (invalid UTF-8, an integer of thousands of
  digits) was a 400 with code ``UNKNOWN``, and a 405 named no allowed method;
- a ``?wait=`` whose client hung up kept its watch slot (and its call) for the
  whole wait: closing sockets right after sending cost the attacker nothing
  and held every slot of the gateway.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import httpx
import pytest

from choreo.gateway.v1 import gateway_pb2 as gw
from choreo.gateway.v1 import gateway_pb2_grpc
from gateway.build import GatewayService
from tests.gateway.conftest import StartGateway
from tests.gateway.fakes import FakeBookingService
from tests.gateway.tokens import ALICE, SECRET, bearer, grpc_bearer
from tests.support import eventually

BODY = {"amount_cents": 4200, "currency": "EUR", "payment_token": "tok_visa"}


@pytest.fixture
async def secured(
    start_gateway: StartGateway, sqlite_url: str, fake_booking: FakeBookingService
) -> GatewayService:
    """A gateway with JWT auth; bookings stay PENDING (a wait lasts as long as it asks)."""
    fake_booking.auto_complete = False
    return await start_gateway(sqlite_url, auth="jwt", jwt_hs256_secret=SECRET, max_watches_per_caller=3)


@pytest.fixture
async def http(secured: GatewayService) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{secured.http_port}", timeout=15) as client:
        yield client


@pytest.mark.parametrize("field", ["user_id", "currency", "payment_token", "idempotency_key"])
async def test_a_lone_surrogate_in_a_body_field_is_400_naming_the_field(
    http: httpx.AsyncClient, field: str
) -> None:
    body = {**BODY, field: "x"}
    raw = httpx.Request("POST", "/", json=body).content.replace(b'"x"', b'"\\ud800"')
    response = await http.post(
        "/v1/bookings", content=raw, headers={**bearer(ALICE), "content-type": "application/json"}
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "INVALID_ARGUMENT"
    assert response.json()["error"]["field"] == field


async def test_a_trailing_slash_is_a_json_404_not_a_redirect_to_the_host_header(
    http: httpx.AsyncClient,
) -> None:
    response = await http.get("/v1/bookings/", headers={**bearer(ALICE), "host": "evil.example"})
    assert response.status_code == 404
    assert "location" not in response.headers
    assert response.json()["error"]["code"] == "NOT_FOUND"


@pytest.mark.parametrize(
    "body",
    [b'{"amount_cents": 1, "currency": "\xff"}', b'{"amount_cents": ' + b"9" * 5000 + b"}"],
    ids=["invalid-utf8", "5000-digit-integer"],
)
async def test_a_body_that_does_not_parse_is_invalid_argument(http: httpx.AsyncClient, body: bytes) -> None:
    response = await http.post(
        "/v1/bookings", content=body, headers={**bearer(ALICE), "content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"] == {
        "code": "INVALID_ARGUMENT",
        "message": "the body is not valid JSON",
        "field": "",
    }


async def test_a_405_names_the_allowed_methods(http: httpx.AsyncClient) -> None:
    for path, allowed in (("/v1/bookings/b-1", "GET"), ("/v1/bookings", "GET, POST")):
        response = await http.delete(path, headers=bearer(ALICE))
        assert response.status_code == 405
        assert response.headers["allow"] == allowed  # every route of the path, not the first one's
        assert response.json()["error"]["code"] == "UNIMPLEMENTED"


async def test_a_wait_gives_its_slot_back_when_its_client_hangs_up(
    secured: GatewayService, http: httpx.AsyncClient
) -> None:
    created = await http.post("/v1/bookings", json=BODY, headers=bearer(ALICE))
    booking_id = created.json()["booking_id"]
    assert secured.core is not None and secured.core._limits is not None
    limits = secured.core._limits
    request = (
        f"GET /v1/bookings/{booking_id}?wait=9 HTTP/1.1\r\nhost: gateway\r\n"
        f"authorization: Bearer {ALICE}\r\n\r\n"
    ).encode()
    # Send a wait and hang up, three times: the caller's every slot, for nothing.
    for _ in range(3):
        _, writer = await asyncio.open_connection("127.0.0.1", secured.http_port)
        writer.write(request)
        await writer.drain()

        async def held() -> bool:
            return limits.open_watches == 1

        await eventually(held)
        writer.close()
        await writer.wait_closed()

        async def released() -> bool:
            return limits.open_watches == 0

        await eventually(released, timeout=3)
    # The caller may wait again at once.
    response = await http.get(f"/v1/bookings/{booking_id}?wait=0.1", headers=bearer(ALICE))
    assert response.status_code == 200


async def test_grpc_watches_and_waits_give_their_slots_back_when_the_channel_closes(
    secured: GatewayService, http: httpx.AsyncClient
) -> None:
    """Held already at 4c00eec (grpc cancels the call's task); kept as a guard next to the HTTP one."""
    created = await http.post("/v1/bookings", json=BODY, headers=bearer(ALICE))
    booking_id = created.json()["booking_id"]
    assert secured.core is not None and secured.core._limits is not None
    limits = secured.core._limits
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{secured.grpc_port}")
    stub = gateway_pb2_grpc.BookingGatewayServiceStub(channel)
    watch = stub.WatchBooking(gw.WatchBookingRequest(booking_id=booking_id), metadata=grpc_bearer(ALICE))
    await watch.read()
    wait = gw.GetBookingRequest(booking_id=booking_id)
    wait.wait.FromSeconds(9)
    waiting = asyncio.ensure_future(stub.GetBooking(wait, metadata=grpc_bearer(ALICE)))

    async def held() -> bool:
        return limits.open_watches == 2

    await eventually(held)
    await channel.close()
    await asyncio.gather(waiting, return_exceptions=True)  # cancelled with its channel

    async def released() -> bool:
        return limits.open_watches == 0

    await eventually(released, timeout=3)
