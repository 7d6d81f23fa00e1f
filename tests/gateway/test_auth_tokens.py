"""Token validation: real tokens signed by real keys, a JWKS served by a real local HTTP server."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from pydantic import ValidationError

from choreoctl.stack.devauth import ISSUER, mint
from gateway.api.auth import (
    AuthenticationFailed,
    Authenticator,
    JwtVerifier,
    build_authenticator,
)
from gateway.api.jwks import JwksCache
from gateway.application.errors import ErrorCode, GatewayError
from gateway.application.principal import ANONYMOUS, Principal
from gateway.settings import GatewaySettings
from tests.gateway.tokens import SECRET, JwksServer, SigningKeyPair, claims, forge_hs256, hs256


def jwt_settings(**values: Any) -> GatewaySettings:
    return GatewaySettings(auth="jwt", **values)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5) as client:
        yield client


async def refused(authenticator: Authenticator, token: str) -> AuthenticationFailed:
    with pytest.raises(AuthenticationFailed) as err:
        await authenticator.authenticate(f"Bearer {token}")
    assert err.value.code is ErrorCode.UNAUTHENTICATED
    assert err.value.challenge == 'Bearer error="invalid_token"'
    return err.value


# -- HS256 ------------------------------------------------------------------------------------------


async def test_a_valid_token_names_the_caller_and_its_scopes() -> None:
    auth = build_authenticator(jwt_settings(jwt_hs256_secret=SECRET), None)
    assert await auth.authenticate(
        f"Bearer {hs256('alice', scope='bookings:read bookings:admin')}"
    ) == Principal("alice", frozenset({"bookings:read", "bookings:admin"}))
    assert (await auth.authenticate(f"bearer {hs256('bob', scp=['a', 'b'])}")).scopes == {"a", "b"}
    assert (await auth.authenticate(f"Bearer {hs256('carol')}")).scopes == frozenset()


async def test_without_auth_every_caller_is_anonymous() -> None:
    auth = build_authenticator(GatewaySettings(), None)
    assert await auth.authenticate(None) is ANONYMOUS
    assert await auth.authenticate("Bearer whatever") is ANONYMOUS


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer   ", f"Basic {hs256()}", hs256()])
async def test_no_bearer_token_is_a_plain_challenge(header: str | None) -> None:
    auth = build_authenticator(jwt_settings(jwt_hs256_secret=SECRET), None)
    with pytest.raises(AuthenticationFailed) as err:
        await auth.authenticate(header)
    assert err.value.challenge == "Bearer" and not err.value.token_sent


@pytest.mark.parametrize(
    "token",
    [
        pytest.param(hs256(ttl=-60), id="expired"),
        pytest.param(jwt.encode({"sub": "alice"}, SECRET, algorithm="HS256"), id="no-exp"),
        pytest.param(jwt.encode({"exp": int(time.time()) + 60}, SECRET, algorithm="HS256"), id="no-sub"),
        # Far enough ahead that the suite never reaches it after it became valid (minted at collection).
        pytest.param(hs256(nbf=int(time.time()) + 365 * 86400), id="not-yet-valid"),
        pytest.param(hs256(secret="another-secret-of-at-least-32-bytes!!"), id="wrong-key"),
        pytest.param(jwt.encode(claims(), None, algorithm="none"), id="alg-none"),
        pytest.param(jwt.encode(claims(), SECRET, algorithm="HS512"), id="alg-from-header-hs512"),
        pytest.param(hs256(aud="another-service"), id="audience-not-configured"),
        pytest.param(hs256("has space"), id="sub-not-a-user-id"),
        pytest.param(hs256(scope=7), id="scope-not-a-string"),
        pytest.param("not.a.token", id="garbage"),
        pytest.param(hs256()[:-4] + "AAAA", id="tampered-signature"),
    ],
)
async def test_hs256_refusals(token: str, caplog: pytest.LogCaptureFixture) -> None:
    auth = build_authenticator(jwt_settings(jwt_hs256_secret=SECRET), None)
    with caplog.at_level(logging.INFO, logger="gateway.api.auth"):
        await refused(auth, token)
    assert "token refused" in caplog.text
    assert token not in caplog.text  # the reason is logged, never the token


async def test_small_leeway_for_clock_skew() -> None:
    auth = build_authenticator(jwt_settings(jwt_hs256_secret=SECRET, jwt_leeway_seconds=10), None)
    assert (await auth.authenticate(f"Bearer {hs256(ttl=-3)}")).subject == "alice"
    await refused(auth, hs256(ttl=-30))


async def test_issuer_and_audience_when_configured() -> None:
    auth = build_authenticator(
        jwt_settings(jwt_hs256_secret=SECRET, jwt_issuer="https://idp.example", jwt_audience="choreo"), None
    )
    good = hs256(iss="https://idp.example", aud="choreo")
    assert (await auth.authenticate(f"Bearer {good}")).subject == "alice"
    assert (
        await auth.authenticate(f"Bearer {hs256(iss='https://idp.example', aud=['x', 'choreo'])}")
    ).subject
    await refused(auth, hs256(iss="https://evil.example", aud="choreo"))
    await refused(auth, hs256(iss="https://idp.example", aud="another-service"))
    await refused(auth, hs256(aud="choreo"))  # no iss
    await refused(auth, hs256(iss="https://idp.example"))  # no aud


async def test_the_secret_may_come_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text(SECRET + "\n")
    auth = build_authenticator(jwt_settings(jwt_hs256_secret_file=path), None)
    assert (await auth.authenticate(f"Bearer {hs256()}")).subject == "alice"


@pytest.mark.parametrize(
    "values,named",
    [
        ({}, "GATEWAY_JWT_HS256_SECRET"),
        (
            {"jwt_hs256_secret": SECRET, "jwt_jwks_url": "https://idp.example/jwks"},
            "GATEWAY_JWT_JWKS_URL are set",
        ),
        (
            {"jwt_hs256_secret": SECRET, "jwt_hs256_secret_file": "/x"},
            "GATEWAY_JWT_HS256_SECRET_FILE are set",
        ),
        ({"jwt_hs256_secret": "short"}, "GATEWAY_JWT_HS256_SECRET: the secret must be at least 32 bytes"),
        ({"jwt_hs256_secret_file": "/nonexistent/secret"}, "GATEWAY_JWT_HS256_SECRET_FILE: cannot read"),
        ({"jwt_jwks_url": "ftp://idp.example/jwks"}, "must be an http(s) URL"),
        ({"jwt_jwks_url": "http://idp.example/jwks"}, "must be https"),
    ],
)
def test_start_up_refuses_a_bad_jwt_configuration(values: dict[str, Any], named: str) -> None:
    with pytest.raises(ValidationError) as err:
        jwt_settings(**values)
    assert named in str(err.value)


def test_auth_must_be_none_or_jwt() -> None:
    with pytest.raises(ValidationError, match="auth"):
        GatewaySettings(auth="basic")


# -- JWKS -------------------------------------------------------------------------------------------


async def test_jwks_rs256_and_es256(http: httpx.AsyncClient) -> None:
    rsa_key, ec_key = SigningKeyPair("rsa-1"), SigningKeyPair("ec-1", "EC")
    with JwksServer(rsa_key, ec_key).running() as server:
        auth = build_authenticator(jwt_settings(jwt_jwks_url=server.url), http)
        assert (await auth.authenticate(f"Bearer {rsa_key.sign('alice')}")).subject == "alice"
        assert (await auth.authenticate(f"Bearer {ec_key.sign('bob')}")).subject == "bob"
        # The algorithm comes from the key: an RSA key's kid on an ES256 token does not verify it.
        await refused(auth, ec_key.sign(kid="rsa-1"))
        await refused(auth, jwt.encode(claims(), None, algorithm="none", headers={"kid": "rsa-1"}))
        assert server.requests == 1  # cached


async def test_jwks_refuses_hs256_tokens_and_algorithm_confusion(http: httpx.AsyncClient) -> None:
    key = SigningKeyPair("rsa-1")
    public_pem = key.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with JwksServer(key).running() as server:
        auth = build_authenticator(jwt_settings(jwt_jwks_url=server.url), http)
        # HMAC keyed with the public key (which anyone has): the classic confusion attack.
        confused = forge_hs256(claims(), public_pem, {"kid": "rsa-1"})
        await refused(auth, confused)
        await refused(auth, hs256(secret=SECRET))


async def test_jwks_rotation_unknown_kid_refetches_and_max_age_refreshes(http: httpx.AsyncClient) -> None:
    old, new = SigningKeyPair("2024"), SigningKeyPair("2025")
    with JwksServer(old).running() as server:
        now = [0.0]
        cache = JwksCache(server.url, http, max_age=600, refresh_interval=10, clock=lambda: now[0])
        auth = Authenticator(JwtVerifier(cache, issuer=None, audience=None, leeway=0))
        assert (await auth.authenticate(f"Bearer {old.sign()}")).subject == "alice"
        # The provider rotates: it publishes the new key and signs with it.
        server.keys = [new]
        now[0] += 11
        assert (await auth.authenticate(f"Bearer {new.sign()}")).subject == "alice"
        assert server.requests == 2
        await refused(auth, old.sign())  # retired with the set it left
        # A key replaced under the same kid is picked up once the set is older than max_age.
        replaced = SigningKeyPair("2025")
        server.keys = [replaced]
        await refused(auth, replaced.sign())
        now[0] += 600
        assert (await auth.authenticate(f"Bearer {replaced.sign()}")).subject == "alice"


async def test_callers_arriving_during_the_first_fetch_share_it(http: httpx.AsyncClient) -> None:
    key = SigningKeyPair("k1")
    with JwksServer(key).running() as server:
        server.delay = 0.3
        auth = build_authenticator(jwt_settings(jwt_jwks_url=server.url), http)
        callers = await asyncio.gather(*(auth.authenticate(f"Bearer {key.sign(f'u{i}')}") for i in range(5)))
        assert [c.subject for c in callers] == [f"u{i}" for i in range(5)]
        assert server.requests == 1


async def test_a_new_kid_during_a_refresh_waits_for_it(http: httpx.AsyncClient) -> None:
    old, new = SigningKeyPair("2024"), SigningKeyPair("2025")
    with JwksServer(old).running() as server:
        now = [0.0]
        cache = JwksCache(server.url, http, max_age=600, refresh_interval=10, clock=lambda: now[0])
        auth = Authenticator(JwtVerifier(cache, issuer=None, audience=None, leeway=0))
        assert (await auth.authenticate(f"Bearer {old.sign()}")).subject == "alice"
        # The set is due for its refresh, which is slow; meanwhile a token signed with the new key.
        server.keys, server.delay, now[0] = [old, new], 0.3, 601.0
        refreshing = asyncio.ensure_future(auth.authenticate(f"Bearer {old.sign('bob')}"))
        await asyncio.sleep(0.05)
        assert (await auth.authenticate(f"Bearer {new.sign('carol')}")).subject == "carol"
        assert (await refreshing).subject == "bob"
        assert server.requests == 2


async def test_a_flood_of_unknown_kids_does_not_hammer_the_identity_provider(http: httpx.AsyncClient) -> None:
    key = SigningKeyPair("good")
    with JwksServer(key).running() as server:
        auth = build_authenticator(
            jwt_settings(jwt_jwks_url=server.url, jwt_jwks_refresh_interval_seconds=60), http
        )
        assert (await auth.authenticate(f"Bearer {key.sign()}")).subject == "alice"
        for _ in range(200):
            await refused(auth, key.sign(kid=str(uuid.uuid4())))
        # The set was fetched less than the refresh interval ago: no kid makes it fetch again.
        assert server.requests == 1
        assert (await auth.authenticate(f"Bearer {key.sign()}")).subject == "alice"


async def test_an_unreachable_jwks_is_unavailable_not_unauthenticated(http: httpx.AsyncClient) -> None:
    server = JwksServer()
    url = server.url  # never started: nothing listens there
    server._server.server_close()
    auth = build_authenticator(jwt_settings(jwt_jwks_url=url), http)
    with pytest.raises(GatewayError) as err:
        await auth.authenticate(f"Bearer {SigningKeyPair('k').sign()}")
    assert err.value.code is ErrorCode.UNAVAILABLE and not isinstance(err.value, AuthenticationFailed)


async def test_a_choreo_up_token_is_accepted() -> None:
    auth = build_authenticator(jwt_settings(jwt_hs256_secret=SECRET, jwt_issuer=ISSUER), None)
    token = mint(SECRET, "dev", ("bookings:admin",))
    assert await auth.authenticate(f"Bearer {token}") == Principal("dev", frozenset({"bookings:admin"}))
