"""Every way a booking ends, end to end: each service its own process, on SQLite and PostgreSQL.

The inventory saga (reserved then charged; sold out and never charged; declined and
released), the user's cancellation of a paid booking (refunded once, released once),
the answers to a cancel that cannot apply, and N+1 concurrent bookings of a resource
of N units with two replicas of every worker on PostgreSQL (exactly N confirmed).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import httpx
import pytest

from choreo.gateway.v1 import gateway_pb2 as gw
from choreo.gateway.v1 import gateway_pb2_grpc
from choreoctl.stack.natsserver import NatsServer
from tests.conftest import make_database_url
from tests.e2e.client import request, wait_terminal
from tests.e2e.saga import cancel, read_ledger, reserved_units, set_capacity, status_code, trace_types
from tests.e2e.stack import SERVICES, Stack
from tests.support import eventually

SAGA_SERVICES = (*SERVICES, "inventory")


def resource_request(
    token: str, resource: str, quantity: int = 1, amount: int = 4200
) -> gw.CreateBookingRequest:
    req = request(token, amount=amount)
    req.resource_id = resource
    req.quantity = quantity
    return req


@pytest.fixture(params=["sqlite", "postgres"])
async def saga_stack(
    request: pytest.FixtureRequest, nats_server: NatsServer, tmp_path: Path
) -> AsyncIterator[Stack]:
    """The system with inventory; on PostgreSQL, two processes of every worker service."""
    kind = request.param
    gens = [make_database_url(kind, tmp_path) for _ in SAGA_SERVICES]
    urls = {name: await anext(gen) for name, gen in zip(SAGA_SERVICES, gens, strict=True)}
    replicas = {"booking": 2, "payment": 2, "inventory": 2} if kind == "postgres" else None
    s = Stack(tmp_path, nats_server.url, database_urls=urls, joining=("inventory",), replicas=replicas)
    try:
        s.start()
        yield s
    finally:
        s.stop()
        for gen in gens:
            with pytest.raises(StopAsyncIteration):
                await anext(gen)


async def test_every_way_a_booking_ends(saga_stack: Stack) -> None:
    stack = saga_stack
    async with grpc.aio.insecure_channel(stack.grpc_target) as channel:
        stub = gateway_pb2_grpc.BookingGatewayServiceStub(channel)
        paid = (await stub.CreateBooking(resource_request("tok_visa", "room-1", 2))).booking
        sold_out = (await stub.CreateBooking(resource_request("tok_visa", "room-1", 101))).booking
        declined = (await stub.CreateBooking(resource_request("tok_chargeDeclined", "room-2", 3))).booking
        plain = (await stub.CreateBooking(request("tok_visa"))).booking  # no resource: today's workflow
        assert (paid.resource_id, paid.quantity) == ("room-1", 2)
        assert (plain.resource_id, plain.quantity) == ("", 0)

        paid = await wait_terminal(stub, paid.booking_id)
        sold_out = await wait_terminal(stub, sold_out.booking_id)
        declined = await wait_terminal(stub, declined.booking_id)
        plain = await wait_terminal(stub, plain.booking_id)
        assert paid.status == gw.BOOKING_STATUS_CONFIRMED
        assert (sold_out.status, sold_out.cancellation_reason) == (gw.BOOKING_STATUS_CANCELLED, "sold_out")
        assert (declined.status, declined.cancellation_reason) == (
            gw.BOOKING_STATUS_CANCELLED,
            "card_declined",
        )
        assert plain.status == gw.BOOKING_STATUS_CONFIRMED

        assert await trace_types(stub, paid.booking_id) == [
            "BookingCreated",
            "InventoryReserved",
            "PaymentSucceeded",
            "BookingConfirmed",
        ]
        assert "PaymentSucceeded" not in await trace_types(stub, sold_out.booking_id)

        async def released() -> bool:
            return "InventoryReleased" in await trace_types(stub, declined.booking_id)

        await eventually(released, timeout=20, message="the declined booking's units released")
        assert await reserved_units(stack, "room-2") == 0
        assert await reserved_units(stack, "room-1") == 2

        # The user cancels the paid booking over HTTP: refunded once, released once.
        async with httpx.AsyncClient(base_url=stack.http_base, timeout=10) as http:
            reply = await http.post(f"/v1/bookings/{paid.booking_id}:cancel")
            assert reply.status_code == 200, reply.text
            assert reply.json()["status"] == "BOOKING_STATUS_CANCELLED"
            again = await http.post(f"/v1/bookings/{paid.booking_id}:cancel")
            assert again.status_code == 409, again.text
            unknown = await http.post("/v1/bookings/bk_does_not_exist:cancel")
            assert unknown.status_code == 404, unknown.text

        async def compensated() -> list[str]:
            types = await trace_types(stub, paid.booking_id)
            return types if {"PaymentRefunded", "InventoryReleased"} <= set(types) else []

        types = await eventually(compensated, timeout=20, message="the refund and the release")
        assert types.count("PaymentRefunded") == types.count("InventoryReleased") == 1
        assert types.count("BookingCancelled") == 1
        final = (await stub.GetBooking(gw.GetBookingRequest(booking_id=paid.booking_id))).booking
        assert (final.status, final.cancellation_reason) == (gw.BOOKING_STATUS_CANCELLED, "cancelled_by_user")

        # gRPC: a cancelled booking cannot be cancelled again; an unknown one is not found.
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await cancel(stub, declined.booking_id)
        assert status_code(failed.value) == grpc.StatusCode.FAILED_PRECONDITION
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await cancel(stub, "bk_does_not_exist")
        assert status_code(missing.value) == grpc.StatusCode.NOT_FOUND

    assert await reserved_units(stack, "room-1") == 0
    ledger = await read_ledger(stack)
    assert ledger.charges[paid.booking_id] == ledger.refunds[paid.booking_id] == 1
    assert ledger.charges[sold_out.booking_id] == 0, "a sold-out booking was charged"
    assert ledger.charges[declined.booking_id] == 0
    assert ledger.net_cents({paid.booking_id, plain.booking_id}) == plain.amount_cents


async def test_n_plus_one_bookings_of_n_units(saga_stack: Stack) -> None:
    units = 12
    await asyncio.to_thread(set_capacity, saga_stack, "concert", units)
    async with grpc.aio.insecure_channel(saga_stack.grpc_target) as channel:
        stub = gateway_pb2_grpc.BookingGatewayServiceStub(channel)
        created = await asyncio.gather(
            *(stub.CreateBooking(resource_request("tok_visa", "concert")) for _ in range(units + 1))
        )
        finals = await asyncio.gather(*(wait_terminal(stub, c.booking.booking_id, 60) for c in created))
    confirmed = [b for b in finals if b.status == gw.BOOKING_STATUS_CONFIRMED]
    sold_out = [b for b in finals if b.cancellation_reason == "sold_out"]
    assert (len(confirmed), len(sold_out)) == (units, 1)
    assert await reserved_units(saga_stack, "concert") == units
    ledger = await read_ledger(saga_stack)
    assert sum(ledger.charges.values()) == units
    assert ledger.charges[sold_out[0].booking_id] == 0
