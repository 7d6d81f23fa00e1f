"""Several gateway replicas, each with its own read model: a read never 404s on a fresh booking."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from nats.js import JetStreamContext

from choreo.booking.v1 import events_pb2 as booking_events
from choreo.gateway.v1 import gateway_pb2 as gw
from choreo.gateway.v1 import gateway_pb2_grpc
from gateway.application.principal import ANONYMOUS
from tests.gateway.conftest import StartGateway
from tests.gateway.fakes import FakeBookingService, publish


async def test_a_booking_created_on_one_replica_is_readable_on_another_at_once(
    start_gateway: StartGateway, tmp_path: Path, fake_booking: FakeBookingService
) -> None:
    fake_booking.auto_complete = False
    a = await start_gateway(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}")
    b = await start_gateway(f"sqlite+aiosqlite:///{tmp_path / 'b.db'}", not_found_grace_seconds=5.0)
    async with (
        grpc.aio.insecure_channel(f"127.0.0.1:{a.grpc_port}") as ch_a,
        grpc.aio.insecure_channel(f"127.0.0.1:{b.grpc_port}") as ch_b,
    ):
        stub_a: Any = gateway_pb2_grpc.BookingGatewayServiceStub(ch_a)
        stub_b: Any = gateway_pb2_grpc.BookingGatewayServiceStub(ch_b)
        for i in range(20):
            created = (
                await stub_a.CreateBooking(
                    gw.CreateBookingRequest(
                        user_id=f"u{i}", amount_cents=100, currency="EUR", payment_token="tok_visa"
                    )
                )
            ).booking
            got = (await stub_b.GetBooking(gw.GetBookingRequest(booking_id=created.booking_id))).booking
            assert got.booking_id == created.booking_id


async def test_unknown_booking_waits_for_the_projection_then_is_found(
    start_gateway: StartGateway, sqlite_url: str, fake_booking: FakeBookingService, js: JetStreamContext
) -> None:
    service = await start_gateway(sqlite_url, not_found_grace_seconds=5.0)

    async def arrive_later() -> None:
        await asyncio.sleep(0.3)
        created = booking_events.BookingCreated(
            booking_id="late-1", user_id="u", amount_cents=5, currency="EUR"
        )
        await publish(js, created, subject="booking.created", source="booking", correlation_id="wf-late")

    later = asyncio.create_task(arrive_later())
    view = await service.core.get("late-1", caller=ANONYMOUS)  # type: ignore[attr-defined]
    await later
    assert view.booking_id == "late-1"


@pytest.mark.parametrize("grace", [0.0, 0.4])
async def test_a_truly_unknown_booking_is_not_found_after_the_grace(
    start_gateway: StartGateway, sqlite_url: str, fake_booking: FakeBookingService, grace: float
) -> None:
    service = await start_gateway(sqlite_url, not_found_grace_seconds=grace)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.grpc_port}") as channel:
        stub: Any = gateway_pb2_grpc.BookingGatewayServiceStub(channel)
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetBooking(gw.GetBookingRequest(booking_id="never-made"))
        elapsed = time.monotonic() - started
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert grace <= elapsed < grace + 2.0
