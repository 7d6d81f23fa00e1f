"""Settings, shutdown, recovery of the reader, and the gateway's boundaries."""

from __future__ import annotations

import ast
import asyncio
import os
import time
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from nats.js import JetStreamContext
from pydantic import ValidationError

from choreo.gateway.v1 import gateway_pb2 as gw
from choreo.gateway.v1 import gateway_pb2_grpc
from choreoctl.stack.natsserver import NatsServer
from gateway.build import build
from gateway.projection.pull import parse_reply
from gateway.settings import GatewaySettings
from tests.gateway.conftest import StartGateway, gateway_settings, stop_gateway
from tests.gateway.fakes import FakeBookingService
from tests.gateway.test_projection import ensure_streams, workflow_facts
from tests.streams import BOOKING_STREAM
from tests.support import eventually

GATEWAY = Path(__file__).resolve().parents[2] / "gateway"


def test_settings_defaults_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("GATEWAY_")]:
        monkeypatch.delenv(name)
    defaults = GatewaySettings()
    assert (defaults.grpc_port, defaults.http_port, defaults.service_name) == (50051, 8080, "gateway")
    assert defaults.database_url == "sqlite+aiosqlite:///./var/gateway.db"
    assert defaults.stream_names == ["BOOKING", "PAYMENT", "NOTIFICATION", "INVENTORY"]
    monkeypatch.setenv("GATEWAY_STREAMS", " BOOKING , PAYMENT,NOTIFICATION ")
    monkeypatch.setenv("GATEWAY_GRPC_PORT", "6000")
    monkeypatch.setenv("GATEWAY_COMMAND_TIMEOUT_SECONDS", "1.5")
    configured = GatewaySettings()
    assert configured.stream_names == ["BOOKING", "PAYMENT", "NOTIFICATION"]
    assert (configured.grpc_port, configured.command_timeout_seconds) == (6000, 1.5)
    for bad in ("", "BOOKING,BOOKING", "BOOK ING", "a.b"):
        monkeypatch.setenv("GATEWAY_STREAMS", bad)
        with pytest.raises(ValidationError):
            GatewaySettings()


def test_reply_subjects_of_both_formats_are_read() -> None:
    assert parse_reply("$JS.ACK.BOOKING.gw-1.1.42.7.1700000000123456789.3") == (42, 7, 1700000000123456789)
    assert parse_reply("$JS.ACK.hub.ACCHASH.BOOKING.gw-1.1.42.7.1700000000123456789.3.rnd") == (
        42,
        7,
        1700000000123456789,
    )
    assert parse_reply("_INBOX.abc") is None
    assert parse_reply("$JS.ACK.BOOKING.gw.1.x.7.1.3") is None


def test_the_gateway_imports_no_other_service() -> None:
    """It shares only the protobuf contracts and the choreo runtime with the services."""
    for path in GATEWAY.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in ("booking", "payment"), f"{path.name} imports {name}"


async def test_shutdown_ends_watches_and_waits_promptly(
    start_gateway: StartGateway, sqlite_url: str, fake_booking: FakeBookingService
) -> None:
    fake_booking.auto_complete = False
    gateway = await start_gateway(sqlite_url, shutdown_grace_seconds=5)
    async with (
        grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.http_port}", timeout=10) as http,
    ):
        stub: Any = gateway_pb2_grpc.BookingGatewayServiceStub(channel)  # typed for the sync API
        request = gw.CreateBookingRequest(
            user_id="u", amount_cents=5, currency="USD", payment_token="tok_visa"
        )
        booking = (await stub.CreateBooking(request)).booking
        watch = stub.WatchBooking(gw.WatchBookingRequest(booking_id=booking.booking_id))
        assert (await watch.read()).booking.status == gw.BOOKING_STATUS_PENDING
        waiting = asyncio.create_task(http.get(f"/v1/bookings/{booking.booking_id}", params={"wait": 9}))
        await asyncio.sleep(0.2)
        started = time.monotonic()
        await stop_gateway(gateway)
        assert time.monotonic() - started < 3, "watchers held the shutdown for the whole grace period"
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await watch.read()
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        answered = await waiting
        assert answered.status_code == 200 and answered.json()["status"] == "BOOKING_STATUS_PENDING"


@pytest.mark.parametrize("port", ["grpc_port", "http_port"])
async def test_a_taken_port_fails_the_start_cleanly(
    start_gateway: StartGateway, sqlite_url: str, nats_server: NatsServer, tmp_path: Path, port: str
) -> None:
    first = await start_gateway(sqlite_url)
    settings = gateway_settings(
        nats_server.url, f"sqlite+aiosqlite:///{tmp_path / 'second.db'}", **{port: getattr(first, port)}
    )
    with pytest.raises((OSError, RuntimeError)):
        await build(settings)
    # The first gateway is untouched and still answers.
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{first.http_port}") as http:
        assert (await http.get("/healthz")).status_code == 200


async def test_a_deleted_consumer_is_replaced_from_the_checkpoint(
    start_gateway: StartGateway, sqlite_url: str, js: JetStreamContext
) -> None:
    await ensure_streams(js)
    gateway = await start_gateway(sqlite_url)
    assert gateway.store is not None
    feed = next(f for f in gateway.feeds if f.stream == BOOKING_STREAM)
    await workflow_facts(js, "one")
    await eventually(lambda: _terminal(gateway.store, "one"))
    assert feed._pull is not None
    await js.delete_consumer(BOOKING_STREAM, feed._pull.consumer)
    await workflow_facts(js, "two")
    await eventually(lambda: _terminal(gateway.store, "two"))

    # The PAYMENT feed alone can make "two" terminal; the BOOKING feed must get there too.
    async def booking_feed_done() -> bool:
        return feed.position == 4

    await eventually(booking_feed_done)
    assert await gateway.store.count("trace_events") == 6


async def _terminal(store: object, booking_id: str) -> bool:
    view = await store.get(booking_id)  # type: ignore[attr-defined]
    return view is not None and bool(view.is_terminal)
