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
from collections.abc import AsyncIterator, Collection

import grpc
from grpc_health.v1 import health
from grpc_reflection.v1alpha import reflection

from gateway.api.auth import AuthenticationFailed, Authenticator, set_grpc_caller
from gateway.api.grpc_handlers import Context, Handler, WrappingInterceptor, rewrap
from gateway.application.errors import ErrorCode, GatewayError

#: Services any caller may use: health checking and reflection (both versions).
OPEN_SERVICES: frozenset[str] = frozenset(
    {health.SERVICE_NAME, reflection.SERVICE_NAME, "grpc.reflection.v1.ServerReflection"}
)
AUTHORIZATION_METADATA = "authorization"
#: Trailing metadata of an UNAUTHENTICATED answer, like HTTP's ``WWW-Authenticate``.
CHALLENGE_METADATA = "www-authenticate"


class AuthInterceptor(WrappingInterceptor):
    """Authenticates every call except those to ``open_services``.

    Args:
        authenticator: Verifies the ``authorization`` metadata (with auth off, every
            caller is anonymous, and the interceptor still records it).
        open_services: Full names of services that need no token.
    """

    def __init__(self, authenticator: Authenticator, open_services: Collection[str] = OPEN_SERVICES) -> None:
        super().__init__()
        self._authenticator = authenticator
        self._open = frozenset(open_services)

    def covers(self, method: str) -> bool:
        return method.lstrip("/").split("/", 1)[0] not in self._open

    def wrap(self, handler: Handler, method: str) -> Handler:
        # The wrapped handler reads the token from its call's context: one serves every call.
        return rewrap(handler, self._authenticated)

    @contextlib.asynccontextmanager
    async def _authenticated(self, context: Context) -> AsyncIterator[None]:
        await _authenticate(self._authenticator, context)
        yield


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
