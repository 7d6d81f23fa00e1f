"""The benchmark's lean HTTP/1.1 client against a tiny server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from choreoctl.bench.http1 import Http1Client, HttpError


class Server:
    """Answers each request with ``reply(method, path, headers, body)``; counts connections."""

    def __init__(self) -> None:
        self.connections = 0
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        self.mode = "ok"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                first, *lines = head.decode().split("\r\n")
                method, path, _ = first.split(" ")
                headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in lines if h)}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.requests.append((method, path, headers, body))
                if self.mode == "garbage":
                    writer.write(b"SSH-2.0-nope\r\n\r\n")
                elif self.mode == "chunked":
                    writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n")
                else:
                    payload = json.dumps({"path": path, "got": body.decode()}).encode()
                    writer.write(
                        b"HTTP/1.1 201 Created\r\nContent-Length: %d\r\n\r\n%s" % (len(payload), payload)
                    )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def server() -> AsyncIterator[tuple[Server, str]]:
    state = Server()
    srv = await asyncio.start_server(state.handle, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    yield state, f"http://127.0.0.1:{port}"
    srv.close()


async def test_requests_share_a_kept_alive_connection(server: tuple[Server, str]) -> None:
    state, url = server
    client = Http1Client(url, connections=4)
    try:
        first = await client.post_json("/v1/bookings", {"a": 1}, headers={"x-correlation-id": "c-1"})
        assert first.status == 201 and first.json() == {"path": "/v1/bookings", "got": '{"a": 1}'}
        second = await client.get("/v1/bookings/b-1?wait=30")
        assert second.json()["path"] == "/v1/bookings/b-1?wait=30"
    finally:
        await client.close()
    assert state.connections == 1
    method, _, headers, _ = state.requests[0]
    assert method == "POST" and headers["content-type"] == "application/json"
    assert headers["x-correlation-id"] == "c-1"


@pytest.mark.parametrize("mode", ["garbage", "chunked"])
async def test_an_unreadable_answer_is_an_error_and_the_connection_is_dropped(
    server: tuple[Server, str], mode: str
) -> None:
    state, url = server
    state.mode = mode
    client = Http1Client(url, connections=1)
    try:
        with pytest.raises(HttpError):
            await client.get("/x")
        state.mode = "ok"
        assert (await client.get("/y")).status == 201
    finally:
        await client.close()
    assert state.connections == 2
