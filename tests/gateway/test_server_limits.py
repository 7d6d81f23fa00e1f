"""Server limits: request bodies, slow and idle connections, header size, connection cap, gRPC limits.

Attacks: one 100 MiB POST used to be read whole (the gateway went from 91 to
476 MiB); 900 slowloris sockets trickling headers stayed open for good; a gRPC
message of any size up to grpc's 4 MiB default was read and decoded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from typing import Any

import grpc
import pytest

from choreo.gateway.v1 import gateway_pb2 as gw
from choreo.gateway.v1 import gateway_pb2_grpc
from gateway.api.server_limits import grpc_options
from gateway.build import GatewayService
from gateway.settings import GatewaySettings
from tests.gateway.conftest import StartGateway
from tests.gateway.fakes import FakeBookingService

LIMIT = 16 * 1024
BOOKING = b'{"user_id": "u1", "amount_cents": 100, "currency": "EUR", "payment_token": "tok_visa"}'


async def open_http(gateway: GatewayService) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", gateway.http_port)


async def read_response(
    reader: asyncio.StreamReader, timeout: float = 5.0
) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of one HTTP/1.1 response with a Content-Length."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), timeout)
    return status, headers, body


async def closed_by_server(reader: asyncio.StreamReader, timeout: float) -> bool:
    """Whether the server closed the connection within ``timeout`` (reads whatever it sent first)."""
    try:
        async with asyncio.timeout(timeout):
            while await reader.read(65536):
                pass
    except TimeoutError:
        return False
    except ConnectionError:
        return True
    return True


async def test_a_declared_body_over_the_limit_is_413_before_it_is_sent(gateway: GatewayService) -> None:
    reader, writer = await open_http(gateway)
    writer.write(
        b"POST /v1/bookings HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % (100 * 1024 * 1024)
    )
    await writer.drain()
    status, headers, body = await read_response(reader)  # no byte of the 100 MiB sent
    assert status == 413 and headers["connection"] == "close"
    assert json.loads(body)["error"]["code"] == "RESOURCE_EXHAUSTED"
    assert await closed_by_server(reader, 5)
    writer.close()


async def test_a_chunked_body_over_the_limit_is_413_while_it_streams(gateway: GatewayService) -> None:
    loop = asyncio.get_running_loop()
    sock = socket.create_connection(("127.0.0.1", gateway.http_port))
    sock.setblocking(False)
    head = (
        b"POST /v1/bookings HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"%x\r\n%s\r\n" % (1024, b" " * 1024)
    sent = 0

    async def stream_body() -> None:
        # A client of the chunked kind: it reads the answer only at the end, or never.
        nonlocal sent
        await loop.sock_sendall(sock, head)
        with contextlib.suppress(ConnectionError):
            while sent < 100 * 1024 * 1024:
                await loop.sock_sendall(sock, chunk)
                sent += 1024
                await asyncio.sleep(0.001)

    sender = asyncio.create_task(stream_body())
    try:
        answer = await asyncio.wait_for(loop.sock_recv(sock, 65536), 10)
    finally:
        sender.cancel()
        sock.close()
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.split()[1] == b"413", answer
    body = json.loads(rest.partition(b"\r\n\r\n")[2])
    assert body["error"]["code"] == "RESOURCE_EXHAUSTED"
    assert sent < 1024 * 1024  # answered after the limit, long before the client was done


async def test_a_body_within_the_limit_is_served(gateway: GatewayService) -> None:
    reader, writer = await open_http(gateway)
    padded = BOOKING[:-1] + b', "idempotency_key": "k-1"' + b" " * (LIMIT - len(BOOKING) - 40) + b"}"
    assert len(padded) <= LIMIT
    writer.write(
        b"POST /v1/bookings HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(padded), padded)
    )
    status, _, body = await read_response(reader)
    assert status == 201, body
    writer.close()


async def test_slowloris_connections_are_closed_after_the_read_timeout(
    start_gateway: StartGateway, sqlite_url: str, fake_booking: FakeBookingService
) -> None:
    gateway = await start_gateway(sqlite_url, http_request_read_timeout_seconds=1.0)
    trickling = [await open_http(gateway) for _ in range(20)]
    silent = [await open_http(gateway) for _ in range(5)]
    for _, writer in trickling:
        writer.write(b"GET /v1/bookings HTTP/1.1\r\nHost: t\r\n")

    async def trickle() -> None:
        for i in range(40):  # a header line every 0.1 s: each byte used to reset uvicorn's only timer
            for _, writer in trickling:
                if not writer.is_closing():
                    writer.write(b"X-Slow-%d: x\r\n" % i)
            await asyncio.sleep(0.1)

    trickler = asyncio.create_task(trickle())
    try:
        closed = await asyncio.gather(*(closed_by_server(r, 3.0) for r, _ in [*trickling, *silent]))
    finally:
        trickler.cancel()
    assert all(closed), f"{closed.count(False)} of {len(closed)} sockets still open"


async def test_the_read_timeout_never_cuts_a_long_poll(
    start_gateway: StartGateway, sqlite_url: str, fake_booking: FakeBookingService
) -> None:
    gateway = await start_gateway(
        sqlite_url, http_request_read_timeout_seconds=0.5, http_keep_alive_seconds=5
    )
    fake_booking.auto_complete = False
    reader, writer = await open_http(gateway)
    writer.write(
        b"POST /v1/bookings HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(BOOKING), BOOKING)
    )
    status, _, body = await read_response(reader)
    assert status == 201
    booking_id = json.loads(body)["booking_id"]
    # A second request on the kept-alive connection, answered after 1.5 s: three read timeouts.
    writer.write(b"GET /v1/bookings/%s?wait=1.5 HTTP/1.1\r\nHost: t\r\n\r\n" % booking_id.encode())
    status, _, body = await read_response(reader)
    assert status == 200 and json.loads(body)["status"] == "BOOKING_STATUS_PENDING"
    writer.close()


async def test_headers_over_the_limit_are_a_json_400(gateway: GatewayService) -> None:
    reader, writer = await open_http(gateway)
    # h11 bounds what it buffers of an incomplete header block: send it in two parts.
    writer.write(b"GET /v1/bookings HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * (20 * 1024))
    await writer.drain()
    await asyncio.sleep(0.2)
    writer.write(b"\r\n\r\n")
    status, headers, body = await read_response(reader)
    assert status == 400 and headers["content-type"] == "application/json"
    assert json.loads(body)["error"]["code"] == "INVALID_ARGUMENT"
    writer.close()


async def test_connections_over_the_cap_are_answered_503(
    start_gateway: StartGateway, sqlite_url: str, fake_booking: FakeBookingService
) -> None:
    gateway = await start_gateway(sqlite_url, http_max_connections=3)
    held = [await open_http(gateway) for _ in range(3)]
    reader, writer = await open_http(gateway)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    status, headers, body = await read_response(reader)
    assert status == 503 and headers["connection"] == "close" and headers["retry-after"] == "1"
    assert json.loads(body)["error"]["code"] == "UNAVAILABLE"
    for _, w in [*held, (reader, writer)]:
        w.close()


async def test_a_grpc_message_over_the_limit_is_resource_exhausted(
    stub: gateway_pb2_grpc.BookingGatewayServiceStub,
) -> None:
    request = gw.CreateBookingRequest(
        user_id="u1", amount_cents=100, currency="EUR", payment_token="tok_" + "x" * LIMIT
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CreateBooking(request)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_grpc_calls_over_the_concurrency_limit_are_resource_exhausted(
    start_gateway: StartGateway, sqlite_url: str, fake_booking: FakeBookingService
) -> None:
    gateway = await start_gateway(sqlite_url, grpc_max_concurrent_rpcs=2)
    fake_booking.auto_complete = False
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        stub: Any = gateway_pb2_grpc.BookingGatewayServiceStub(channel)
        created = await stub.CreateBooking(
            gw.CreateBookingRequest(user_id="u1", amount_cents=100, currency="EUR", payment_token="tok_visa")
        )
        watches = [
            stub.WatchBooking(gw.WatchBookingRequest(booking_id=created.booking.booking_id)) for _ in range(2)
        ]
        for watch in watches:
            await watch.read()  # both in progress
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetBooking(gw.GetBookingRequest(booking_id=created.booking.booking_id))
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        for watch in watches:
            watch.cancel()


def test_grpc_options_carry_every_limit() -> None:
    settings = GatewaySettings(grpc_max_connection_idle_seconds=0)
    options = dict(grpc_options(settings))
    assert options["grpc.max_receive_message_length"] == LIMIT
    assert options["grpc.max_concurrent_streams"] == 4096
    assert options["grpc.http2.min_ping_interval_without_data_ms"] == 10_000
    assert options["grpc.keepalive_permit_without_calls"] == 0
    assert options["grpc.http2.max_ping_strikes"] == 2
    assert options["grpc.max_connection_age_ms"] == 1_800_000
    assert options["grpc.max_connection_age_grace_ms"] == 300_000
    assert "grpc.max_connection_idle_ms" not in options  # 0: never
