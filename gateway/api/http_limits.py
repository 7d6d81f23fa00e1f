"""The request body limit, as ASGI middleware (``GATEWAY_HTTP_MAX_BODY_BYTES``).

A body over the limit is answered 413 in the documented error shape, and the
connection closed, without reading the rest: a declared ``Content-Length``
over the limit before the first byte of the body, a chunked (or understated)
body as soon as the bytes received pass the limit. Never more than the limit
(plus one read) is held, so a 100 MiB POST costs the gateway nothing.

Why not Starlette's ``RequestBodyLimitMiddleware`` (FastAPI's ``max_body_size``):
in Starlette 1.10 it answers in plain text, outside the documented error shape,
and leaves the connection open, so the client goes on sending what it declared.
"""

from __future__ import annotations

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.api.http_errors import error_json

_DISCONNECT: Message = {"type": "http.disconnect"}


class BodyLimit:
    """Answers 413 for a request body larger than ``max_bytes``.

    Args:
        app: The ASGI app.
        max_bytes: Largest body accepted.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._too_large(scope, receive, send)
            return
        received = 0
        refused = False  # the 413 went out: the app's own answer is dropped
        started = False

        async def limited_receive() -> Message:
            nonlocal received, refused
            if refused:
                return _DISCONNECT
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    refused = True
                    if not started:
                        await self._too_large(scope, receive, send)
                    # To the app the client is gone: it stops reading and answers into the void.
                    return _DISCONNECT
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, limited_receive, guarded_send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Closing the connection is what stops the client sending the rest.
        response = JSONResponse(
            error_json("RESOURCE_EXHAUSTED", f"the request body is larger than {self.max_bytes} bytes"),
            413,
            headers={"Connection": "close"},
        )
        await response(scope, receive, send)
