"""Who is calling: bearer tokens (JWT) verified into a ``Principal``.

With ``GATEWAY_AUTH=jwt`` every API call carries ``authorization: Bearer
<token>`` (gRPC metadata or HTTP header). The token is verified with PyJWT
against one key source: an HS256 secret (``GATEWAY_JWT_HS256_SECRET`` or its
file) or the identity provider's JWKS (``GATEWAY_JWT_JWKS_URL``, RS256/ES256,
see ``gateway.api.jwks``). The algorithm comes from the key, never from the
token's header, so ``alg: none`` and a token signed with HS256 using a public
RSA key as the secret ("algorithm confusion") are refused. ``exp`` and ``sub``
are required; ``iss`` and ``aud`` are checked when configured.

The token's ``sub`` is the user; its scopes come from ``scope`` (a
space-separated string, RFC 8693) or ``scp`` (a list, or a string). A refused
token's reason is logged, never the token; the client is told only that a
token is missing or invalid (RFC 6750).

With ``GATEWAY_AUTH=none`` every caller is ``ANONYMOUS``.

The gRPC side is ``gateway.api.grpc_auth``; the HTTP side is ``http_caller`` here.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Protocol

import httpx
import jwt
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from choreo.validation import check_id
from gateway.api.jwks import JwksCache, KeysUnavailable, SigningKey
from gateway.application.errors import ErrorCode, GatewayError
from gateway.application.principal import ANONYMOUS, Principal
from gateway.settings import GatewaySettings

log = logging.getLogger(__name__)

#: The authentication scheme, in ``authorization`` and ``WWW-Authenticate``.
BEARER = "Bearer"
#: Longest token accepted (a provider's tokens are a few KiB at most).
MAX_TOKEN_LENGTH = 16 * 1024
#: Scopes read from one token at most (a token listing more is refused).
_MAX_SCOPES = 256


class AuthenticationFailed(GatewayError):
    """No valid bearer token: UNAUTHENTICATED, HTTP 401 with ``WWW-Authenticate``.

    Attributes:
        token_sent: A token came with the call (then it was invalid).
    """

    def __init__(self, message: str, *, token_sent: bool) -> None:
        super().__init__(ErrorCode.UNAUTHENTICATED, message)
        self.token_sent = token_sent

    @property
    def challenge(self) -> str:
        """The ``WWW-Authenticate`` value (RFC 6750 section 3)."""
        return f'{BEARER} error="invalid_token"' if self.token_sent else BEARER


class KeySource(Protocol):
    """Where the key that verifies a token comes from."""

    async def key(self, kid: str) -> SigningKey | None:
        """The key for the token's ``kid`` ("" when it has none), or ``None`` when unknown."""


class StaticKey:
    """One HS256 secret, whatever the token's ``kid``."""

    def __init__(self, secret: bytes) -> None:
        self._key = SigningKey(secret, "HS256")

    async def key(self, kid: str) -> SigningKey | None:
        return self._key


class InvalidToken(Exception):
    """Why a token was refused (for the log; the client hears less)."""


class JwtVerifier:
    """Verifies bearer tokens into principals.

    Args:
        keys: The key source (an HS256 secret or a JWKS).
        issuer: Required ``iss`` (``None``: not checked).
        audience: Required ``aud`` (``None``: a token naming an audience is refused).
        leeway: Seconds of clock skew tolerated on ``exp``, ``nbf`` and ``iat``.
    """

    def __init__(self, keys: KeySource, *, issuer: str | None, audience: str | None, leeway: float) -> None:
        self._keys = keys
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway
        required = ["exp", "sub"]
        required += ["iss"] if issuer is not None else []
        required += ["aud"] if audience is not None else []
        self._options: jwt.types.Options = {"require": required}

    async def verify(self, token: str) -> Principal:
        """The caller the token names.

        Raises:
            InvalidToken: The token is malformed, unsigned, signed with another key or
                algorithm, expired, not yet valid, or for another issuer or audience.
            KeysUnavailable: The identity provider's keys cannot be fetched.
        """
        if len(token) > MAX_TOKEN_LENGTH:
            raise InvalidToken(f"longer than {MAX_TOKEN_LENGTH} characters")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"malformed: {exc}") from None
        kid = header.get("kid", "")
        if not isinstance(kid, str):
            raise InvalidToken("its kid is not a string")
        signing = await self._keys.key(kid)
        if signing is None:
            raise InvalidToken(f"no key with kid {kid[:64]!r}")
        try:
            claims = jwt.decode(
                token,
                signing.key,
                algorithms=[signing.algorithm],
                issuer=self._issuer,
                audience=self._audience,
                leeway=self._leeway,
                options=self._options,
            )
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"{type(exc).__name__}: {exc}") from None
        return principal_from_claims(claims)


def principal_from_claims(claims: dict[str, Any]) -> Principal:
    """The principal of verified claims: ``sub`` and the scopes of ``scope`` or ``scp``.

    Raises:
        InvalidToken: ``sub`` is not a usable user id, or the scopes are malformed.
    """
    subject = claims.get("sub")
    # A user id like any other (choreo.validation): 1 to 128 printable ASCII characters.
    if not isinstance(subject, str) or check_id("sub", subject) is not None:
        raise InvalidToken("its sub is not a user id (1 to 128 printable ASCII characters, no spaces)")
    raw = claims.get("scope", claims.get("scp", ""))
    if isinstance(raw, str):
        scopes = raw.split()
    elif isinstance(raw, list) and all(isinstance(s, str) for s in raw):
        scopes = list(raw)
    else:
        raise InvalidToken("its scope (or scp) is neither a string nor a list of strings")
    if len(scopes) > _MAX_SCOPES:
        raise InvalidToken(f"more than {_MAX_SCOPES} scopes")
    return Principal(subject=subject, scopes=frozenset(scopes))


class Authenticator:
    """Turns the ``authorization`` value of a call into its caller.

    Args:
        verifier: Verifies tokens; ``None`` when authentication is off (every caller
            is then ``ANONYMOUS``).
    """

    def __init__(self, verifier: JwtVerifier | None) -> None:
        self._verifier = verifier

    @property
    def enabled(self) -> bool:
        return self._verifier is not None

    async def authenticate(self, authorization: str | None) -> Principal:
        """The caller of a call whose ``authorization`` header/metadata is this.

        Raises:
            AuthenticationFailed: No bearer token, or an invalid one.
            GatewayError: UNAVAILABLE when the identity provider's keys cannot be fetched.
        """
        if self._verifier is None:
            return ANONYMOUS
        token = bearer_token(authorization)
        if token is None:
            sent = "no" if not authorization else "a non-Bearer"
            log.info("unauthenticated call: %s authorization", sent)
            raise AuthenticationFailed(
                "a bearer token is required (authorization: Bearer ...)", token_sent=False
            )
        try:
            return await self._verifier.verify(token)
        except InvalidToken as exc:
            log.info("unauthenticated call: token refused: %s", exc)
            raise AuthenticationFailed("the bearer token is invalid or expired", token_sent=True) from None
        except KeysUnavailable as exc:
            log.warning("cannot verify tokens: %s", exc)
            raise GatewayError(
                ErrorCode.UNAVAILABLE,
                "cannot verify tokens now (the identity provider's keys are unavailable)",
            ) from None


def bearer_token(authorization: str | None) -> str | None:
    """The token of ``Bearer <token>`` (scheme case-insensitive), or ``None``."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != BEARER.lower() or not token:
        return None
    return token


def build_authenticator(settings: GatewaySettings, http: httpx.AsyncClient | None) -> Authenticator:
    """The authenticator the settings describe.

    Args:
        settings: The gateway's settings (validated: with ``jwt``, exactly one key source).
        http: Client for fetching the JWKS (needed when ``jwt_jwks_url`` is set).
    """
    if settings.auth == "none":
        if settings.jwt_hs256_secret or settings.jwt_hs256_secret_file or settings.jwt_jwks_url:
            log.warning("GATEWAY_JWT_* settings are ignored: GATEWAY_AUTH=none, every caller is anonymous")
        return Authenticator(None)
    keys: KeySource
    if settings.jwt_jwks_url is not None:
        if http is None:
            raise ValueError("a JWKS needs an HTTP client")
        keys = JwksCache(
            settings.jwt_jwks_url,
            http,
            max_age=settings.jwt_jwks_max_age_seconds,
            refresh_interval=settings.jwt_jwks_refresh_interval_seconds,
        )
    else:
        keys = StaticKey(settings.hs256_secret())
    verifier = JwtVerifier(
        keys, issuer=settings.jwt_issuer, audience=settings.jwt_audience, leeway=settings.jwt_leeway_seconds
    )
    return Authenticator(verifier)


# -- HTTP: a FastAPI dependency -------------------------------------------------------------------

#: Declares the scheme in ``/openapi.json``; the dependency below does the checking.
_BEARER_SCHEME = HTTPBearer(
    auto_error=False,
    bearerFormat="JWT",
    description="A JWT from the identity provider (GATEWAY_AUTH=jwt); its sub is the user.",
)


def http_caller(authenticator: Authenticator) -> Callable[..., Awaitable[Principal]]:
    """The FastAPI dependency giving a route its caller (``Depends(http_caller(...))``).

    With authentication off it declares nothing and always gives ``ANONYMOUS``.
    """
    if not authenticator.enabled:

        async def anonymous() -> Principal:
            return ANONYMOUS

        return anonymous

    async def caller(
        request: Request,
        _declared: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER_SCHEME)],
    ) -> Principal:
        return await authenticator.authenticate(request.headers.get("authorization"))

    return caller


# -- gRPC: the caller of the call being served (set by gateway.api.grpc_auth) ---------------------

_GRPC_CALLER: contextvars.ContextVar[Principal] = contextvars.ContextVar("grpc_caller")


def set_grpc_caller(principal: Principal) -> None:
    """Records the caller of the gRPC call running in this task (the interceptor does)."""
    _GRPC_CALLER.set(principal)


def grpc_caller() -> Principal:
    """The caller of the gRPC call running in this task.

    Raises:
        LookupError: No interceptor authenticated the call (a wiring error: fail closed).
    """
    return _GRPC_CALLER.get()
