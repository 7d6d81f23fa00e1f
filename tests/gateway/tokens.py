"""Real tokens for the auth tests: an HS256 secret, RSA and EC keys, and a JWKS served over HTTP."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

#: An HS256 secret of the minimum length (32 bytes).
SECRET = "s3cret-for-tests-only-0123456789abcdef"


def claims(sub: str = "alice", *, ttl: float = 6 * 3600, **extra: Any) -> dict[str, Any]:
    """A token's claims; valid for hours by default, since modules mint theirs at import
    and the suite may reach them long after."""
    now = int(time.time())
    return {"sub": sub, "iat": now, "exp": now + int(ttl), **extra}


def hs256(sub: str = "alice", secret: str = SECRET, **extra: Any) -> str:
    """A token signed with the HS256 ``secret``."""
    return jwt.encode(claims(sub, **extra), secret, algorithm="HS256")


#: The callers of the authorization tests: two users, each owning bookings the other must not see.
ALICE, BOB = hs256("alice"), hs256("bob")


def forge_hs256(payload: dict[str, Any], key: bytes, headers: dict[str, Any] | None = None) -> str:
    """An HS256 token keyed with any bytes (PyJWT refuses a public key as an HMAC secret; attackers don't)."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = {"alg": "HS256", "typ": "JWT", **(headers or {})}
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def bearer(token: str) -> dict[str, str]:
    """The HTTP header carrying ``token``."""
    return {"authorization": f"Bearer {token}"}


def grpc_bearer(token: str) -> tuple[tuple[str, str], ...]:
    """The gRPC metadata carrying ``token``."""
    return (("authorization", f"Bearer {token}"),)


class SigningKeyPair:
    """A private key that signs tokens, and its public JWK."""

    def __init__(self, kid: str, kind: str = "RSA") -> None:
        self.kid = kid
        self.private: Any
        if kind == "RSA":
            self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            self.algorithm = "RS256"
            self.jwk: dict[str, Any] = json.loads(RSAAlgorithm.to_jwk(self.private.public_key()))
        else:
            self.private = ec.generate_private_key(ec.SECP256R1())
            self.algorithm = "ES256"
            self.jwk = json.loads(ECAlgorithm.to_jwk(self.private.public_key()))
        self.jwk["kid"] = kid

    def sign(self, sub: str = "alice", *, kid: str | None = None, **extra: Any) -> str:
        return jwt.encode(
            claims(sub, **extra), self.private, algorithm=self.algorithm, headers={"kid": kid or self.kid}
        )


class JwksServer:
    """A real HTTP server publishing a JWKS the test may change (key rotation); counts requests."""

    def __init__(self, *keys: SigningKeyPair) -> None:
        self.keys = list(keys)
        self.requests = 0
        #: Seconds each answer takes (a slow identity provider).
        self.delay = 0.0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.requests += 1
                time.sleep(owner.delay)
                body = json.dumps({"keys": [k.jwk for k in owner.keys]}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/.well-known/jwks.json"

    @contextmanager
    def running(self) -> Iterator[JwksServer]:
        thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()
            thread.join()
