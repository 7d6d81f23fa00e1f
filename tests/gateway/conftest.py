"""Fixtures of the gateway suite: the gateway in-process, a fake booking service, clients."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from choreo.gateway.v1 import gateway_pb2_grpc
from choreoctl.stack.natsserver import NatsServer
from gateway.build import GatewayService, build
from gateway.settings import GatewaySettings
from tests.gateway.fakes import FakeBookingService

StartGateway = Callable[..., Awaitable[GatewayService]]


def gateway_settings(nats_url: str, database_url: str, **overrides: Any) -> GatewaySettings:
    values: dict[str, Any] = {
        "nats_url": nats_url,
        "database_url": database_url,
        "host": "127.0.0.1",
        "grpc_port": 0,
        "http_port": 0,
        "shutdown_grace_seconds": 2.0,
        "command_timeout_seconds": 2.0,
        "max_wait_seconds": 10.0,
        "log_format": "text",
    }
    values.update(overrides)
    return GatewaySettings(**values)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}"


@pytest.fixture
async def start_gateway(nats_server: NatsServer) -> AsyncIterator[StartGateway]:
    """Builds and starts gateways on the test's NATS server; stops them afterwards."""
    running: list[GatewayService] = []

    async def start(database_url: str, *, wait_ready: bool = True, **overrides: Any) -> GatewayService:
        service = await build(gateway_settings(nats_server.url, database_url, **overrides))
        await service.start()
        running.append(service)
        if wait_ready:
            assert service.readiness is not None
            await asyncio.wait_for(service.readiness.wait_caught_up(), 20)
        return service

    yield start
    for service in running:
        await stop_gateway(service)


async def stop_gateway(service: GatewayService) -> None:
    """Stops a gateway once (a test may have stopped it already)."""
    if not getattr(service, "_stopped", False):
        service._stopped = True  # type: ignore[attr-defined]
        await service.stop()


@pytest.fixture
async def fake_booking(nc: NATS, js: JetStreamContext) -> AsyncIterator[FakeBookingService]:
    fake = FakeBookingService(nc, js)
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def gateway(
    start_gateway: StartGateway, sqlite_url: str, fake_booking: FakeBookingService
) -> GatewayService:
    """A ready gateway on SQLite, with the fake booking service answering."""
    return await start_gateway(sqlite_url)


@pytest.fixture
async def stub(gateway: GatewayService) -> AsyncIterator[gateway_pb2_grpc.BookingGatewayServiceStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        yield gateway_pb2_grpc.BookingGatewayServiceStub(channel)


@pytest.fixture
async def http(gateway: GatewayService) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.http_port}", timeout=15) as client:
        yield client
