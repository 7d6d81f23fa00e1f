"""HTTP errors in the one documented shape, for what FastAPI's handlers do not see.

Every error body is ``{"error": {"code", "message", "field"}}`` (plus
``error_id`` for a 500): the API's handlers answer that way, and so do the
ASGI middleware (body limit, unexpected exceptions) and the connection
protocol (requests h11 cannot parse, connections over the cap) here.
"""

from __future__ import annotations

import json
import logging

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.application.errors import GENERIC_MESSAGE, report_unexpected

log = logging.getLogger(__name__)


def error_json(code: str, message: str, field: str = "", error_id: str = "") -> dict[str, dict[str, str]]:
    """The documented error body; ``error_id`` only for unexpected failures."""
    error = {"code": code, "message": message, "field": field}
    if error_id:
        error["error_id"] = error_id
    return {"error": error}


def error_body(code: str, message: str) -> bytes:
    """``error_json`` as bytes, for the protocol layer below ASGI."""
    return json.dumps(error_json(code, message)).encode()


async def service_unavailable(scope: Scope, receive: Receive, send: Send) -> None:
    """ASGI app answering 503 and closing the connection (the connection cap is reached)."""
    response = JSONResponse(
        error_json("UNAVAILABLE", "too many open connections; retry shortly"),
        503,
        headers={"Retry-After": "1", "Connection": "close"},
    )
    await response(scope, receive, send)


class CatchAll:
    """ASGI middleware: an exception that escaped the app is a 500 with an error id, logged.

    Starlette's own handler of last resort answers plain text (and in debug, the
    traceback); this one answers in the documented shape, and logs the traceback
    once, under the error id the client got. If the response had already started,
    the connection is closed by the server.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked_send)
        except Exception:
            error_id = report_unexpected(f"{scope['method']} {scope['path']}")
            if started:
                raise
            response = JSONResponse(error_json("INTERNAL", GENERIC_MESSAGE, error_id=error_id), 500)
            await response(scope, receive, send)
