"""The identity provider's signing keys: a JWKS fetched over HTTP, cached, refreshed.

Keys are fetched asynchronously (httpx; the event loop never blocks) on first
use, again once the set is older than ``max_age`` (so a rotated key set is
picked up), and again when a token names a key id the set does not hold (a key
the provider just started using). That last refresh happens at most once per
``refresh_interval``: a flood of tokens with made-up ``kid`` values costs the
provider one request per interval, not one per token. One fetch runs at a time,
as a task of its own: a caller that needs keys while it runs (a burst of first
calls after a start, a token with the new ``kid`` during a refresh) awaits that
same fetch instead of being refused.

Each key's algorithm comes from the key itself, never from the token: RS256
for an RSA key, ES256 for an EC key on P-256. Keys of other types, curves or a
conflicting ``alg`` are skipped (logged), and so are keys meant for encryption
(``use: enc``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import jwt

log = logging.getLogger(__name__)

#: Largest JWKS document read (a provider's set is a few KiB).
MAX_JWKS_BYTES = 256 * 1024


class KeysUnavailable(Exception):
    """No key set could be fetched, and none is cached."""


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A verification key and the one algorithm it verifies."""

    key: Any
    algorithm: str


def algorithm_of(jwk: dict[str, Any]) -> str | None:
    """The algorithm a JWK verifies: RS256 (RSA), ES256 (EC P-256); ``None`` for anything else."""
    kty, declared = jwk.get("kty"), jwk.get("alg")
    if kty == "RSA":
        algorithm = "RS256"
    elif kty == "EC" and jwk.get("crv") == "P-256":
        algorithm = "ES256"
    else:
        return None
    if declared not in (None, algorithm) or jwk.get("use") not in (None, "sig"):
        return None
    return algorithm


def parse_jwks(document: Any) -> dict[str, SigningKey]:
    """The usable signing keys of a JWKS document, by ``kid`` ("" for a key without one).

    Raises:
        ValueError: The document is not a JWKS.
    """
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWKS document (no 'keys' list)")
    keys: dict[str, SigningKey] = {}
    for jwk in document["keys"]:
        if not isinstance(jwk, dict):
            continue
        kid = str(jwk.get("kid", ""))
        algorithm = algorithm_of(jwk)
        if algorithm is None:
            log.info(
                "JWKS: skipping key %r (kty %s, alg %s): not RS256 or ES256",
                kid,
                jwk.get("kty"),
                jwk.get("alg"),
            )
            continue
        try:
            keys[kid] = SigningKey(jwt.PyJWK(jwk, algorithm).key, algorithm)
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError) as exc:
            log.warning("JWKS: skipping key %r: %s", kid, exc)
    return keys


class JwksCache:
    """The key set behind ``url``, kept fresh.

    Args:
        url: Where the identity provider publishes its JWKS.
        client: HTTP client to fetch with (the cache does not close it).
        max_age: Seconds after which the set is fetched again.
        refresh_interval: Least seconds between two fetches caused by unknown key ids
            (or by a failed fetch).
        clock: Monotonic seconds (tests).
    """

    def __init__(
        self,
        url: str,
        client: httpx.AsyncClient,
        *,
        max_age: float,
        refresh_interval: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = url
        self._client = client
        self._max_age = max_age
        self._refresh_interval = refresh_interval
        self._clock = clock
        self._keys: dict[str, SigningKey] = {}
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        self._inflight: asyncio.Task[None] | None = None
        #: Fetches made (operations and tests).
        self.fetches = 0

    async def key(self, kid: str) -> SigningKey | None:
        """The key with id ``kid`` ("" for a token without one), or ``None`` when unknown.

        Raises:
            KeysUnavailable: No key set could be fetched and none is cached.
        """
        if self._stale():
            await self._refresh(unknown_kid=False)
        found = self._lookup(kid)
        if found is None and (self._inflight is not None or self._may_refetch()):
            await self._refresh(unknown_kid=True)
            found = self._lookup(kid)
        if found is None and self._fetched_at is None:
            raise KeysUnavailable(f"the key set at {self._url} could not be fetched")
        return found

    def _lookup(self, kid: str) -> SigningKey | None:
        found = self._keys.get(kid)
        if found is None and not kid and len(self._keys) == 1:
            # A token without a kid is fine while the provider has a single key.
            found = next(iter(self._keys.values()))
        return found

    def _stale(self) -> bool:
        if self._fetched_at is None:
            return self._may_refetch()
        return self._clock() - self._fetched_at >= self._max_age and self._may_refetch()

    def _may_refetch(self) -> bool:
        return self._attempted_at is None or self._clock() - self._attempted_at >= self._refresh_interval

    async def _refresh(self, *, unknown_kid: bool) -> None:
        """Awaits the fetch in flight, or starts one if the interval allows, then awaits it."""
        if self._inflight is None:
            if not self._may_refetch():
                return
            self._attempted_at = self._clock()
            self.fetches += 1
            self._inflight = asyncio.create_task(self._fetch_keys(unknown_kid))
        task = self._inflight
        # Shielded: a caller that gives up (its call cancelled) does not cancel the others' fetch.
        await asyncio.shield(task)

    async def _fetch_keys(self, unknown_kid: bool) -> None:
        try:
            keys = parse_jwks(await self._fetch())
        except (httpx.HTTPError, ValueError) as exc:
            # Keep the keys in hand: a provider that is briefly down must not lock everyone out.
            log.warning("JWKS: cannot fetch %s: %s", self._url, exc or type(exc).__name__)
            return
        finally:
            self._inflight = None
        if keys.keys() != self._keys.keys():
            log.info(
                "JWKS: %d keys (%s)%s",
                len(keys),
                ", ".join(sorted(keys)) or "none usable",
                " after a token named an unknown kid" if unknown_kid else "",
            )
        self._keys = keys
        self._fetched_at = self._clock()

    async def _fetch(self) -> Any:
        async with self._client.stream("GET", self._url, headers={"accept": "application/json"}) as response:
            response.raise_for_status()
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_JWKS_BYTES:
                    raise ValueError(f"the JWKS is larger than {MAX_JWKS_BYTES} bytes")
        try:
            return json.loads(body)
        except ValueError as exc:
            raise ValueError(f"the JWKS is not JSON: {exc}") from None
