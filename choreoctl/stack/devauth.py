"""``choreo up --auth``: the gateway verifies bearer tokens, signed with a dev secret.

The gateway runs with ``GATEWAY_AUTH=jwt`` and ``GATEWAY_JWT_HS256_SECRET`` set
to a secret generated once per data directory (``choreoctl.stack.devsecrets``), and
``choreo up`` prints tokens signed with it (PyJWT, HS256): one for ``dev-user``
and one for ``dev-admin`` with the scope ``bookings:admin``, who sees every
user's bookings. Anyone holding the secret can mint any token: it is for a
developer's machine, never for a deployment (plug an identity provider there:
``GATEWAY_JWT_JWKS_URL``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import jwt

from choreoctl.stack.devsecrets import SecretStore

#: The ``sub`` of the printed user token (the demo books as this user).
DEV_USER = "dev-user"
#: The ``sub`` of the printed admin token.
DEV_ADMIN = "dev-admin"
ADMIN_SCOPE = "bookings:admin"
SECRET_VARIABLE = "GATEWAY_JWT_HS256_SECRET"
#: How long a printed token is valid; ``choreo up`` prints fresh ones on each start.
TOKEN_LIFETIME_SECONDS = 7 * 24 * 3600
ISSUER = "choreo-up"


def mint(secret: str, subject: str, scopes: tuple[str, ...] = (), now: float | None = None) -> str:
    """A bearer token for ``subject``, HS256-signed with ``secret``.

    Claims: ``sub``, ``iat``, ``exp`` (``TOKEN_LIFETIME_SECONDS`` later), ``iss``
    (``choreo-up``), and ``scope`` (space-separated, OAuth 2.0 style) when given.
    """
    issued = int(time.time() if now is None else now)
    claims: dict[str, object] = {
        "sub": subject,
        "iat": issued,
        "exp": issued + TOKEN_LIFETIME_SECONDS,
        "iss": ISSUER,
    }
    if scopes:
        claims["scope"] = " ".join(scopes)
    return jwt.encode(claims, secret, algorithm="HS256")


@dataclass(frozen=True)
class DevAuth:
    """The gateway's dev secret and the tokens printed for it."""

    secret: str

    @classmethod
    def load(cls, store: SecretStore) -> DevAuth:
        # 48 bytes: above the 32 bytes RFC 7518 asks of an HS256 key.
        return cls(store.get(SECRET_VARIABLE, nbytes=48))

    def gateway_settings(self) -> dict[str, str]:
        """The gateway's settings, without its ``GATEWAY_`` prefix."""
        # The issuer too, so a token signed with the secret for another purpose is refused.
        return {"AUTH": "jwt", "JWT_HS256_SECRET": self.secret, "JWT_ISSUER": ISSUER}

    def user_token(self) -> str:
        return mint(self.secret, DEV_USER)

    def admin_token(self) -> str:
        return mint(self.secret, DEV_ADMIN, (ADMIN_SCOPE,))
