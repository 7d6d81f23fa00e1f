"""When the booking service cannot answer, the gateway says so quickly (and never hangs)."""

from __future__ import annotations

import time

import grpc
import httpx
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from choreo.commands import H_REJECTED, REJECTED_EXPIRED, REJECTED_OVERLOADED
from choreo.gateway.v1 import gateway_pb2 as gw
from choreo.gateway.v1 import gateway_pb2_grpc
from tests.gateway.conftest import StartGateway
from tests.streams import CMD_CREATE_BOOKING

REQUEST = gw.CreateBookingRequest(user_id="u1", amount_cents=100, currency="USD", payment_token="tok_visa")


async def test_no_booking_service_is_unavailable_at_once(
    start_gateway: StartGateway, sqlite_url: str
) -> None:
    gateway = await start_gateway(sqlite_url)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        stub = gateway_pb2_grpc.BookingGatewayServiceStub(channel)
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.CreateBooking(REQUEST, timeout=10)
        assert time.monotonic() - started < 1.0
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "no responders" in (err.value.details() or "")
        assert "the booking was not created" in (err.value.details() or "")
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.http_port}") as http:
        started = time.monotonic()
        response = await http.post(
            "/v1/bookings",
            json={"user_id": "u1", "amount_cents": 100, "currency": "USD", "payment_token": "tok_visa"},
        )
        assert time.monotonic() - started < 1.0
        assert response.status_code == 503 and response.headers["retry-after"] == "1"
        assert response.json()["error"]["code"] == "UNAVAILABLE"
        # Validation still answers first: a bad request is a 400 even while booking is down.
        bad = await http.post("/v1/bookings", json={"user_id": "", "amount_cents": 100})
        assert bad.status_code == 400 and bad.json()["error"]["field"] == "user_id"


async def test_a_silent_booking_service_times_out_as_unavailable(
    start_gateway: StartGateway, sqlite_url: str, nc: NATS
) -> None:
    received: list[bytes] = []

    async def swallow(msg: object) -> None:
        received.append(b"")

    await nc.subscribe(CMD_CREATE_BOOKING, queue="booking", cb=swallow)
    await nc.flush()
    gateway = await start_gateway(sqlite_url, command_timeout_seconds=0.3)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        stub = gateway_pb2_grpc.BookingGatewayServiceStub(channel)
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.CreateBooking(REQUEST, timeout=10)
        elapsed = time.monotonic() - started
    assert 0.25 < elapsed < 2.0
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    details = err.value.details() or ""
    # Without a key of its own the client learns the one the gateway sent, to retry safely with.
    assert 'retry with idempotency_key "gw-' in details, details
    assert len(received) == 1


@pytest.mark.parametrize(
    ("rejection", "said"),
    [(REJECTED_OVERLOADED, "is overloaded"), (REJECTED_EXPIRED, "took the request too late")],
)
async def test_a_rejected_command_is_unavailable_and_was_not_created(
    start_gateway: StartGateway, sqlite_url: str, nc: NATS, rejection: str, said: str
) -> None:
    async def reject(msg: Msg) -> None:
        await nc.publish(msg.reply, b"", headers={H_REJECTED: rejection})

    await nc.subscribe(CMD_CREATE_BOOKING, queue="booking", cb=reject)
    await nc.flush()
    gateway = await start_gateway(sqlite_url)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        stub = gateway_pb2_grpc.BookingGatewayServiceStub(channel)
        keyed = gw.CreateBookingRequest()
        keyed.CopyFrom(REQUEST)
        keyed.idempotency_key = "order-1"
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.CreateBooking(keyed, timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert err.value.details() == (
        f'the booking service {said}: the booking was not created; retry with idempotency_key "order-1"'
    )
