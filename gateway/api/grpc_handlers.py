"""Wrapping gRPC method handlers: the one way the gateway's server interceptors act on a call.

A grpc.aio server interceptor cannot see a call run; it can only hand back
another method handler. The gateway's interceptors (``grpc_errors``,
``grpc_auth``) each need the same thing: the servicer's behaviour, of whatever
kind (unary or streaming request, a response returned, yielded, or written
with ``context.write``), run inside an async context manager of their own. The
context manager does what the interceptor is for: authenticate before the call,
or turn the exceptions that escape it into a gRPC status.

``WrappingInterceptor`` makes the wrapped handler once per method and reuses
it (the server looks the same handler up for every call), so a call costs a
dict lookup, not a new handler.
"""

from __future__ import annotations

import contextlib
import inspect
from abc import abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeAlias

import grpc

Context = grpc.aio.ServicerContext[Any, Any]
Deserializer = Callable[[bytes], Any]
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
#: What an interceptor puts around each call: entered before the servicer's behaviour
#: runs (a request parsed by ``rewrap`` is parsed inside it), left when it ends.
Guard = Callable[[Context], AbstractAsyncContextManager[object]]


async def _parsed(requests: AsyncIterator[bytes], parse: Deserializer) -> AsyncIterator[Any]:
    async for raw in requests:
        yield parse(raw)


def rewrap(handler: Handler, guard: Guard, parse: Deserializer | None = None) -> Handler:
    """``handler`` with its behaviour run inside ``guard``; same kind, same response serializer.

    Args:
        handler: The servicer's method handler.
        guard: Made for each call, around the whole of it.
        parse: Parses each request inside ``guard``; the new handler then gets raw bytes
            from grpc. ``None`` keeps the handler's own deserializer.
    """
    deserializer = handler.request_deserializer if parse is None else None
    serializer = handler.response_serializer
    streaming_request = handler.stream_unary is not None or handler.stream_stream is not None

    def request_of(request: Any) -> Any:
        if parse is None:
            return request
        return _parsed(request, parse) if streaming_request else parse(request)

    if handler.unary_unary or handler.stream_unary:
        # The stubs describe the blocking API; under grpc.aio these are coroutine functions.
        behaviour: Any = handler.unary_unary or handler.stream_unary

        async def unary_response(request: Any, context: Context) -> Any:
            async with guard(context):
                return await behaviour(request_of(request), context)

        if streaming_request:
            return grpc.stream_unary_rpc_method_handler(unary_response, deserializer, serializer)
        return grpc.unary_unary_rpc_method_handler(unary_response, deserializer, serializer)

    streamer: Any = handler.unary_stream or handler.stream_stream
    make = (
        grpc.stream_stream_rpc_method_handler if streaming_request else grpc.unary_stream_rpc_method_handler
    )

    if inspect.isasyncgenfunction(streamer):
        # A streaming answer written by yielding: yield what the servicer yields.
        async def stream_response(request: Any, context: Context) -> AsyncIterator[Any]:
            # aclosing: a cancelled call closes the servicer's generator now (its finally
            # gives back a watch slot), not whenever the garbage collector finalizes it. The
            # generator is made inside the guard (the request parsed there too).
            async with (
                guard(context),
                contextlib.aclosing(streamer(request_of(request), context)) as responses,
            ):
                async for response in responses:
                    yield response

        return make(stream_response, deserializer, serializer)

    # A coroutine that writes its responses with ``context.write``.
    async def write_responses(request: Any, context: Context) -> None:
        async with guard(context):
            await streamer(request_of(request), context)

    return make(write_responses, deserializer, serializer)


class WrappingInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """A server interceptor that hands back each covered method's handler wrapped by ``wrap``.

    Subclasses say which methods they cover and how a handler is wrapped (``rewrap``).
    """

    def __init__(self) -> None:
        # method -> (the server's handler, its wrapped handler); made again if the handler changes.
        self._wrapped: dict[str, tuple[Handler, Handler]] = {}

    def covers(self, method: str) -> bool:
        """Whether calls of ``method`` (``/package.Service/Method``) are wrapped (all by default)."""
        return True

    @abstractmethod
    def wrap(self, handler: Handler, method: str) -> Handler:
        """The wrapped handler of ``method`` (made once per method; ``rewrap`` does the work)."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or not self.covers(method):  # None: unknown method, grpc answers UNIMPLEMENTED
            return handler
        known = self._wrapped.get(method)
        if known is None or known[0] is not handler:
            known = self._wrapped[method] = (handler, self.wrap(handler, method))
        return known[1]
