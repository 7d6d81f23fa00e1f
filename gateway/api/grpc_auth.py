"""Authentication of gRPC calls: a server interceptor in front of the gateway's services.

The interceptor wraps each protected method's behaviour: before the servicer
runs, it verifies the call's ``authorization`` metadata (``gateway.api.auth``) and
records the caller for the servicer (``gateway.api.auth.grpc_caller``), in the
call's own task. A call without a valid token ends UNAUTHENTICATED, with a
``www-authenticate`` trailing metadata as HTTP would send. Health checking and
reflection are not protected (probes and tools carry no token).
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from typing import Any

import grpc
from grpc_health.v1 import health
from grpc_reflection.v1alpha import reflection

from gateway.api.auth import AuthenticationFailed, Authenticator, set_grpc_caller
from gateway.application.errors import ErrorCode, GatewayError

#: Services any caller may use: health checking and reflection (both versions).
OPEN_SERVICES: frozenset[str] = frozenset(
    {health.SERVICE_NAME, reflection.SERVICE_NAME, "grpc.reflection.v1.ServerReflection"}
)
AUTHORIZATION_METADATA = "authorization"
#: Trailing metadata of an UNAUTHENTICATED answer, like HTTP's ``WWW-Authenticate``.
CHALLENGE_METADATA = "www-authenticate"

Context = grpc.aio.ServicerContext[Any, Any]
#: The kinds of method handler, and how to make one of each.
_KINDS: dict[str, Callable[..., Any]] = {
    "unary_unary": grpc.unary_unary_rpc_method_handler,
    "unary_stream": grpc.unary_stream_rpc_method_handler,
    "stream_unary": grpc.stream_unary_rpc_method_handler,
    "stream_stream": grpc.stream_stream_rpc_method_handler,
}


class AuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Authenticates every call except those to ``open_services``.

    Args:
        authenticator: Verifies the ``authorization`` metadata (with auth off, every
            caller is anonymous, and the interceptor still records it).
        open_services: Full names of services that need no token.
    """

    def __init__(self, authenticator: Authenticator, open_services: Collection[str] = OPEN_SERVICES) -> None:
        self._authenticator = authenticator
        self._open = frozenset(open_services)
        # The wrapped handler of a method reads the token from its call's context, so it is
        # made once per method and reused (the server looks the same handler up every call).
        self._wrapped: dict[str, tuple[Any, Any]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or method.lstrip("/").split("/", 1)[0] in self._open:
            return handler
        known = self._wrapped.get(method)
        if known is None or known[0] is not handler:
            known = self._wrapped[method] = (handler, _wrap(handler, self._authenticator))
        return known[1]


async def _authenticate(authenticator: Authenticator, context: Context) -> None:
    metadata = context.invocation_metadata()
    authorization = next((str(v) for k, v in metadata or () if k == AUTHORIZATION_METADATA), None)
    try:
        set_grpc_caller(await authenticator.authenticate(authorization))
    except AuthenticationFailed as exc:
        context.set_trailing_metadata(((CHALLENGE_METADATA, exc.challenge),))
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, exc.message)
    except GatewayError as exc:
        status = (
            grpc.StatusCode.UNAVAILABLE if exc.code is ErrorCode.UNAVAILABLE else grpc.StatusCode.INTERNAL
        )
        await context.abort(status, exc.message)


def _wrap(handler: Any, authenticator: Authenticator) -> Any:
    """The handler with authentication in front of its behaviour (whatever its kind)."""
    kind = next(k for k in _KINDS if getattr(handler, k) is not None)
    behaviour: Callable[[Any, Context], Any] = getattr(handler, kind)
    wrapped: Any
    if inspect.isasyncgenfunction(behaviour):
        # A streaming answer written by yielding: yield what the servicer yields.
        async def authenticated_stream(request: Any, context: Context) -> AsyncIterator[Any]:
            await _authenticate(authenticator, context)
            # aclosing: a cancelled call closes the servicer's generator now (its finally
            # gives back a watch slot), not whenever the garbage collector finalizes it.
            async with contextlib.aclosing(behaviour(request, context)) as responses:
                async for response in responses:
                    yield response

        wrapped = authenticated_stream
    else:

        async def authenticated(request: Any, context: Context) -> Any:
            await _authenticate(authenticator, context)
            return await behaviour(request, context)

        wrapped = authenticated
    return _KINDS[kind](wrapped, handler.request_deserializer, handler.response_serializer)
