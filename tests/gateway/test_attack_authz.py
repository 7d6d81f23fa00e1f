"""A hostile caller probing for other users' bookings through the trace API (issue 9, second look).

Attack that worked against main at 4c00eec and fails there: tracing by booking
id answered another user's booking NOT_FOUND at once (its view is in memory)
and a missing one after a database read: about 0.3 ms apart on loopback,
enough, over many tries, to tell an existing booking from a made-up id.
GetBooking answers both after the same not-found grace; so does the trace now.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx
import pytest

from choreo.gateway.v1 import gateway_pb2 as gw
from choreo.gateway.v1 import gateway_pb2_grpc
from gateway.build import GatewayService
from tests.gateway.conftest import StartGateway
from tests.gateway.fakes import FakeBookingService
from tests.gateway.tokens import ALICE, BOB, SECRET, bearer, grpc_bearer

GRACE = 0.4
BODY = {"amount_cents": 4200, "currency": "EUR", "payment_token": "tok_visa"}


@pytest.fixture
async def secured(
    start_gateway: StartGateway, sqlite_url: str, fake_booking: FakeBookingService
) -> GatewayService:
    return await start_gateway(sqlite_url, auth="jwt", jwt_hs256_secret=SECRET, not_found_grace_seconds=GRACE)


@pytest.fixture
async def http(secured: GatewayService) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{secured.http_port}", timeout=15) as client:
        yield client


async def test_tracing_another_users_booking_takes_as_long_as_a_missing_one(
    secured: GatewayService, http: httpx.AsyncClient
) -> None:
    alices = (await http.post("/v1/bookings", json=BODY, headers=bearer(ALICE))).json()["booking_id"]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{secured.grpc_port}") as channel:
        stub: Any = gateway_pb2_grpc.BookingGatewayServiceStub(channel)
        for booking_id in (alices, "no-such-booking"):
            started = time.monotonic()
            response = await http.get(f"/v1/bookings/{booking_id}/trace", headers=bearer(BOB))
            took = time.monotonic() - started
            assert response.status_code == 404
            assert response.json()["error"]["message"] == f"no facts about booking {booking_id}"
            assert GRACE * 0.9 <= took < GRACE + 1.0, (booking_id, took)

            started = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.GetWorkflowTrace(
                    gw.GetWorkflowTraceRequest(booking_id=booking_id), metadata=grpc_bearer(BOB)
                )
            took = time.monotonic() - started
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
            assert GRACE * 0.9 <= took < GRACE + 1.0, (booking_id, took)
        # The owner is not slowed down.
        started = time.monotonic()
        mine = await stub.GetWorkflowTrace(
            gw.GetWorkflowTraceRequest(booking_id=alices), metadata=grpc_bearer(ALICE)
        )
        assert mine.events and time.monotonic() - started < GRACE
