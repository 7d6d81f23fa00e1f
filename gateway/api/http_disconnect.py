"""HTTP calls that end when their client hangs up.

Uvicorn does not cancel a handler whose client is gone: the handler runs to
its end and its answer is dropped. For most calls that is a few milliseconds;
a ``?wait=`` holds a watch slot (``GATEWAY_MAX_WATCHES``,
``GATEWAY_MAX_WATCHES_PER_CALLER``) for all its seconds, so a client could send
waits and hang up at once, and take every slot without keeping a connection.
``unless_client_leaves`` cancels such work when the client disconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any, TypeVar

from fastapi import Request

T = TypeVar("T")

#: The status of a request whose client left before the answer (nginx's; nobody receives it).
CLIENT_CLOSED_REQUEST = 499


async def unless_client_leaves(request: Request, work: Coroutine[Any, Any, T]) -> T | None:
    """Runs ``work`` until it ends or the client disconnects (then cancelled: ``None``).

    ``work``'s result or exception is the call's; a cancelled ``work`` has finished
    (left its slot) when this returns.
    """
    waiting = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait((waiting, gone), return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not waiting.done():
            waiting.cancel()
            # Let it leave its slot before answering.
            with contextlib.suppress(asyncio.CancelledError):
                await waiting
    return None if waiting.cancelled() else waiting.result()


async def _disconnected(request: Request) -> None:
    """Returns once the client has disconnected (a GET's body, empty, is read first)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
