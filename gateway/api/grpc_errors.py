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
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeAlias

import grpc
from grpc.aio import AbortError

from gateway.application.errors import GENERIC_MESSAGE, report_unexpected

#: Trailing metadata carrying the error id of an INTERNAL error.
ERROR_ID_METADATA = "error-id"

Context = grpc.aio.ServicerContext[Any, Any]
Deserializer = Callable[[bytes], Any]
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"


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


async def _parsed(requests: AsyncIterator[bytes], parse: Deserializer) -> AsyncIterator[Any]:
    async for raw in requests:
        yield parse(raw)


def _guard(handler: Handler, method: str) -> Handler:
    parse = _parser(handler.request_deserializer)
    serializer = handler.response_serializer

    if handler.unary_unary or handler.stream_unary:
        # The stubs describe the blocking API; under grpc.aio these are coroutine functions.
        behavior: Any = handler.unary_unary or handler.stream_unary
        streaming_request = handler.stream_unary is not None

        async def unary_response(request: Any, context: Context) -> Any:
            try:
                request = _parsed(request, parse) if streaming_request else parse(request)
                return await behavior(request, context)
            except AbortError:
                raise
            except Exception as exc:
                await _fail(context, method, exc)

        if streaming_request:
            return grpc.stream_unary_rpc_method_handler(unary_response, None, serializer)
        return grpc.unary_unary_rpc_method_handler(unary_response, None, serializer)

    streamer: Any = handler.unary_stream or handler.stream_stream
    streaming_request = handler.stream_stream is not None
    make = (
        grpc.stream_stream_rpc_method_handler if streaming_request else grpc.unary_stream_rpc_method_handler
    )

    if inspect.isasyncgenfunction(streamer):

        async def stream_response(request: Any, context: Context) -> AsyncIterator[Any]:
            try:
                request = _parsed(request, parse) if streaming_request else parse(request)
                # aclosing: a cancelled call closes the inner generator now, not at collection.
                async with contextlib.aclosing(streamer(request, context)) as responses:
                    async for response in responses:
                        yield response
            except AbortError:
                raise
            except Exception as exc:
                await _fail(context, method, exc)

        return make(stream_response, None, serializer)

    # A coroutine that writes its responses with ``context.write``.
    async def write_responses(request: Any, context: Context) -> None:
        try:
            request = _parsed(request, parse) if streaming_request else parse(request)
            await streamer(request, context)
        except AbortError:
            raise
        except Exception as exc:
            await _fail(context, method, exc)

    return make(write_responses, None, serializer)


class ErrorInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Turns malformed requests into INVALID_ARGUMENT and unexpected exceptions into INTERNAL + error id.

    The guarded handler of a method depends on nothing of the call, so it is made once
    per method and reused (the server looks the same handler up for every call).
    """

    def __init__(self) -> None:
        self._guarded: dict[str, tuple[Handler, Handler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler = await continuation(handler_call_details)
        if handler is None:  # unknown method: grpc answers UNIMPLEMENTED
            return handler
        method: str = handler_call_details.method
        known = self._guarded.get(method)
        if known is None or known[0] is not handler:
            known = self._guarded[method] = (handler, _guard(handler, method))
        return known[1]
