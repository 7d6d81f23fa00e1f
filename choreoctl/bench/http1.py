"""A lean HTTP/1.1 client for load: keep-alive connections, one request at a time on each.

httpx spends over 10 ms of CPU per booking (a POST and a GET) in its layers of
transports and models; in the HTTP closed loop the benchmark's own httpx process
saturated a core while the gateway sat at a third of one, so the figure
measured the client. This client writes the request bytes and reads the
status line, the headers and a ``Content-Length`` body straight off an asyncio
stream, which is all a JSON API answered by uvicorn needs, so the figure is the
gateway's.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


class HttpError(Exception):
    """The server's answer could not be read as HTTP/1.1 with a Content-Length."""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def exchange(self, request: bytes) -> Response:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
            raise HttpError(f"not an HTTP/1.x status line: {lines[0]!r}")
        length: int | None = None
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        if length is None:
            raise HttpError("response without Content-Length (chunked bodies are not supported)")
        body = await self.reader.readexactly(length) if length else b""
        return Response(int(parts[1]), body)

    def close(self) -> None:
        self.writer.close()


class Http1Client:
    """Sends requests over up to ``connections`` keep-alive connections to one server.

    Args:
        base_url: ``http://host:port``.
        connections: Connections kept open (one per concurrent caller is best).
        timeout: Seconds a request may take, answer included.
    """

    def __init__(self, base_url: str, *, connections: int = 64, timeout: float = 40.0) -> None:
        url = urlsplit(base_url)
        if url.scheme != "http" or not url.hostname:
            raise ValueError(f"need an http://host:port URL, not {base_url!r}")
        self._host = url.hostname
        self._port = url.port or 80
        self._authority = url.netloc
        self._timeout = timeout
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(connections)

    async def close(self) -> None:
        for connection in self._idle:
            connection.close()
        self._idle.clear()

    async def post_json(self, path: str, body: Any, headers: dict[str, str] | None = None) -> Response:
        data = json.dumps(body).encode()
        return await self._request(
            "POST", path, data, {"content-type": "application/json", **(headers or {})}
        )

    async def get(self, path: str) -> Response:
        return await self._request("GET", path, b"", {})

    async def _request(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> Response:
        lines = [f"{method} {path} HTTP/1.1", f"host: {self._authority}", f"content-length: {len(body)}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        async with self._slots:
            connection = self._idle.pop() if self._idle else await self._open()
            try:
                async with asyncio.timeout(self._timeout):
                    response = await connection.exchange(request)
            except BaseException:
                connection.close()  # its state is unknown: never reuse it
                raise
            self._idle.append(connection)
            return response

    async def _open(self) -> _Connection:
        reader, writer = await asyncio.open_connection(self._host, self._port)
        return _Connection(reader, writer)
