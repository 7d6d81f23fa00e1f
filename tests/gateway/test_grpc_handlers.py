"""``gateway.api.grpc_handlers``: every kind of method handler runs inside the interceptor's guard.

The gateway's own services have no client-streaming method, so the kinds the
API tests cannot reach are exercised here directly on the wrapped handlers.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from gateway.api.grpc_handlers import Context, Handler, WrappingInterceptor, rewrap


class Recorder:
    """A guard that writes down when it is entered and left, and what it saw leave."""

    def __init__(self) -> None:
        self.events: list[str] = []

    @contextlib.asynccontextmanager
    async def guard(self, context: Context) -> AsyncIterator[None]:
        self.events.append(f"enter {context}")
        try:
            yield
        except Exception as exc:
            self.events.append(f"failed {exc}")
            raise
        finally:
            self.events.append("exit")


def _parse(raw: bytes) -> str:
    return raw.decode().upper()


def _deserialize(raw: bytes) -> str:
    return raw.decode()


def _serialize(value: str) -> bytes:
    return value.encode()


async def _requests(*items: bytes) -> AsyncIterator[bytes]:
    for item in items:
        yield item


async def test_a_unary_call_runs_inside_the_guard_with_the_handler_s_own_deserializer() -> None:
    recorder = Recorder()

    async def behaviour(request: str, context: Any) -> str:
        recorder.events.append(f"call {request}")
        return request + "!"

    handler = grpc.unary_unary_rpc_method_handler(behaviour, _deserialize, _serialize)
    wrapped = rewrap(handler, recorder.guard)
    assert wrapped.request_deserializer is _deserialize and wrapped.response_serializer is _serialize
    assert await wrapped.unary_unary("hi", "ctx") == "hi!"
    assert recorder.events == ["enter ctx", "call hi", "exit"]


async def test_a_parse_replaces_the_deserializer_and_runs_inside_the_guard() -> None:
    recorder = Recorder()

    async def behaviour(request: str, context: Any) -> str:
        return request

    def refuse(raw: bytes) -> str:
        raise ValueError("not a message")

    handler = grpc.unary_unary_rpc_method_handler(behaviour, _deserialize, _serialize)
    wrapped = rewrap(handler, recorder.guard, parse=refuse)
    assert wrapped.request_deserializer is None
    with pytest.raises(ValueError, match="not a message"):
        await wrapped.unary_unary(b"raw", "ctx")
    assert recorder.events == ["enter ctx", "failed not a message", "exit"]


async def test_a_streamed_request_is_parsed_message_by_message() -> None:
    recorder = Recorder()

    async def behaviour(requests: AsyncIterator[str], context: Any) -> str:
        return ",".join([r async for r in requests])

    handler = grpc.stream_unary_rpc_method_handler(behaviour, _deserialize, _serialize)
    wrapped = rewrap(handler, recorder.guard, parse=_parse)
    assert wrapped.stream_unary is not None and wrapped.unary_unary is None
    assert await wrapped.stream_unary(_requests(b"a", b"b"), "ctx") == "A,B"
    assert recorder.events == ["enter ctx", "exit"]


async def test_a_yielded_stream_is_passed_on_and_closed_with_the_call() -> None:
    recorder = Recorder()

    async def behaviour(requests: AsyncIterator[str], context: Any) -> AsyncIterator[str]:
        try:
            async for request in requests:
                yield request
                yield request
        finally:
            recorder.events.append("servicer closed")

    handler = grpc.stream_stream_rpc_method_handler(behaviour, _deserialize, _serialize)
    wrapped = rewrap(handler, recorder.guard, parse=_parse)
    assert wrapped.stream_stream is not None
    responses = wrapped.stream_stream(_requests(b"x", b"y"), "ctx")
    assert await anext(responses) == "X"
    await responses.aclose()  # a call cancelled mid-stream
    assert recorder.events == ["enter ctx", "servicer closed", "exit"]


async def test_a_stream_written_with_context_write_runs_inside_the_guard() -> None:
    recorder = Recorder()
    written: list[str] = []

    async def behaviour(request: str, context: Any) -> None:
        written.extend([request, request])

    handler = grpc.unary_stream_rpc_method_handler(behaviour, _deserialize, _serialize)
    wrapped = rewrap(handler, recorder.guard)
    assert wrapped.unary_stream is not None and wrapped.request_deserializer is _deserialize
    assert await wrapped.unary_stream("w", "ctx") is None
    assert written == ["w", "w"] and recorder.events == ["enter ctx", "exit"]


class Counting(WrappingInterceptor):
    def __init__(self) -> None:
        super().__init__()
        self.made: list[str] = []

    def covers(self, method: str) -> bool:
        return not method.startswith("/open.")

    def wrap(self, handler: Handler, method: str) -> Handler:
        self.made.append(method)
        return rewrap(handler, Recorder().guard)


class Details:
    def __init__(self, method: str) -> None:
        self.method = method


async def test_the_interceptor_wraps_a_method_once_and_again_only_for_a_new_handler() -> None:
    async def behaviour(request: str, context: Any) -> str:
        return request

    first = grpc.unary_unary_rpc_method_handler(behaviour)
    second = grpc.unary_unary_rpc_method_handler(behaviour)
    interceptor = Counting()

    async def serve(handler: Handler | None, method: str) -> Handler | None:
        async def continuation(details: Any) -> Handler | None:
            return handler

        return await interceptor.intercept_service(continuation, Details(method))  # type: ignore[arg-type]

    one = await serve(first, "/svc.S/M")
    assert one is not first and await serve(first, "/svc.S/M") is one
    assert await serve(second, "/svc.S/M") not in (one, second)
    assert await serve(first, "/open.S/M") is first
    assert await serve(None, "/svc.S/Unknown") is None
    assert interceptor.made == ["/svc.S/M", "/svc.S/M"]
