"""The gRPC server's last line of defence: request decoding and unexpected exceptions.

``ErrorInterceptor`` rewraps every method handler so that

- a request that does not parse as its protobuf message is INVALID_ARGUMENT
  (grpc's own deserializer failure leaks out as UNKNOWN with the exception
  text): the handler receives raw bytes and the wrapper parses them;
- any exception a servicer lets escape is INTERNAL with a generic message and
  an error id, in the details and in the trailing metadata ``error-id``,
  while the traceback is logged under the same id (``gateway.application.errors``).

Put it first in ``grpc.aio.server(interceptors=[...])`` so it also covers the
interceptors after it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
from grpc.aio import AbortError

from gateway.api.grpc_handlers import Context, Deserializer, Handler, WrappingInterceptor, rewrap
from gateway.application.errors import GENERIC_MESSAGE, report_unexpected

#: Trailing metadata carrying the error id of an INTERNAL error.
ERROR_ID_METADATA = "error-id"


class _Malformed(Exception):
    """A request message did not parse."""


def _parser(deserializer: Deserializer | None) -> Deserializer:
    def parse(raw: bytes) -> Any:
        if deserializer is None:
            return raw
        try:
            return deserializer(raw)
        except Exception:
            raise _Malformed from None

    return parse


async def _fail(context: Context, method: str, exc: Exception) -> None:
    """Aborts the call for an exception that escaped its handler."""
    if isinstance(exc, _Malformed):
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the request is not a valid protobuf message")
    error_id = report_unexpected(method)
    context.set_trailing_metadata(((ERROR_ID_METADATA, error_id),))
    await context.abort(grpc.StatusCode.INTERNAL, f"{GENERIC_MESSAGE}: {error_id}")


@contextlib.asynccontextmanager
async def _guarded(context: Context, method: str) -> AsyncIterator[None]:
    """Around one call: what escapes it becomes INVALID_ARGUMENT or INTERNAL (an abort passes)."""
    try:
        yield
    except AbortError:
        raise
    except Exception as exc:
        await _fail(context, method, exc)


class ErrorInterceptor(WrappingInterceptor):
    """Turns malformed requests into INVALID_ARGUMENT and unexpected exceptions into INTERNAL + error id.

    The guarded handler of a method depends on nothing of the call, so it is made once
    per method and reused (the server looks the same handler up for every call).
    """

    def wrap(self, handler: Handler, method: str) -> Handler:
        return rewrap(
            handler,
            lambda context: _guarded(context, method),
            parse=_parser(handler.request_deserializer),
        )
