"""Fixtures that run every service as its own process against a real nats-server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest

from choreo.gateway.v1 import gateway_pb2_grpc
from choreoctl.stack.natsserver import NatsServer
from tests.conftest import make_database_url
from tests.e2e.stack import SERVICES, Stack

pytestmark = pytest.mark.e2e


@pytest.fixture
def stack(nats_server: NatsServer, tmp_path: Path) -> Iterator[Stack]:
    """The system on SQLite, started and ready."""
    s = Stack(tmp_path, nats_server.url)
    try:
        s.start()
        yield s
    finally:
        s.stop()


@pytest.fixture
async def pg_stack(nats_server: NatsServer, tmp_path: Path) -> AsyncIterator[Stack]:
    """The system with every service on its own PostgreSQL database."""
    gens = [make_database_url("postgres", tmp_path) for _ in SERVICES]
    urls = {name: await anext(gen) for name, gen in zip(SERVICES, gens, strict=True)}
    s = Stack(tmp_path, nats_server.url, database_urls=urls)
    try:
        s.start()
        yield s
    finally:
        s.stop()
        for gen in gens:
            with pytest.raises(StopAsyncIteration):
                await anext(gen)


@pytest.fixture
async def stub(stack: Stack) -> AsyncIterator[gateway_pb2_grpc.BookingGatewayServiceStub]:
    async with grpc.aio.insecure_channel(stack.grpc_target) as channel:
        yield gateway_pb2_grpc.BookingGatewayServiceStub(channel)
