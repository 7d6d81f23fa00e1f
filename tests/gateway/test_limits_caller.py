"""Per-caller and global limits: create rates and open watches, over gRPC and HTTP.

The attack of issue 9, "5,000 watches are all accepted", ran against the gateway
before these limits (commit e82bd38) and failed there: every watch was accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx
import pytest

from choreo.gateway.v1 import gateway_pb2 as gw
from choreo.gateway.v1 import gateway_pb2_grpc
from gateway.application.limits import CallerLimits, LimitExceeded, TokenBuckets
from gateway.application.principal import ANONYMOUS, Principal
from gateway.build import GatewayService
from gateway.settings import GatewaySettings
from tests.gateway.conftest import StartGateway
from tests.gateway.fakes import FakeBookingService
from tests.gateway.tokens import ALICE, BOB, SECRET, bearer, grpc_bearer
from tests.support import eventually

Stub = Any
#: GATEWAY_MAX_WATCHES_PER_CALLER's default.
PER_CALLER = 100
BODY = {"amount_cents": 4200, "currency": "EUR", "payment_token": "tok_visa"}


# -- units ------------------------------------------------------------------------------------------


def test_token_bucket_allows_the_burst_then_the_rate() -> None:
    now = [100.0]
    buckets = TokenBuckets(rate=2.0, burst=3, clock=lambda: now[0])
    assert [buckets.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a") == pytest.approx(0.5)  # one token every half second
    assert buckets.take("b") == 0.0  # another key has its own bucket
    now[0] += 0.5
    assert buckets.take("a") == 0.0
    assert buckets.take("a") > 0
    assert TokenBuckets(rate=0, burst=1).take("a") == 0.0  # 0: unlimited


def test_full_buckets_are_forgotten() -> None:
    now = [0.0]
    buckets = TokenBuckets(rate=10.0, burst=5, clock=lambda: now[0])
    for i in range(1024):
        buckets.take(f"caller-{i}")
    now[0] += 1.0  # every bucket refilled
    buckets.take("newcomer")
    assert len(buckets) == 1


def test_watch_slots_per_caller_and_in_total() -> None:
    limits = CallerLimits(create_rate=0, create_burst=1, max_watches_per_caller=2, max_watches=3)
    alice, bob = Principal("alice"), Principal("bob")
    with limits.watching(alice), limits.watching(alice):
        with pytest.raises(LimitExceeded) as err, limits.watching(alice):
            pass
        assert err.value.retry_after == 1.0
        with limits.watching(bob):
            assert limits.open_watches == 3
            with pytest.raises(LimitExceeded), limits.watching(bob):
                pass  # the gateway's total
    assert limits.open_watches == 0
    # Without authentication nobody is told apart: only the total applies.
    with contextlib.ExitStack() as held:
        for _ in range(3):
            held.enter_context(limits.watching(ANONYMOUS))
        with pytest.raises(LimitExceeded), limits.watching(ANONYMOUS):
            pass


def test_defaults_leave_room_for_the_bench() -> None:
    defaults = GatewaySettings()
    # choreo bench: 1,000 creates/s open loop, each followed by a wait of up to ~1.5 s.
    assert 2 * 1_500 <= defaults.max_watches < 5_000  # the attack's 5,000 fail even without auth
    assert defaults.max_watches_per_caller == PER_CALLER


# -- over the APIs ----------------------------------------------------------------------------------


@pytest.fixture
async def secured(
    start_gateway: StartGateway, sqlite_url: str, fake_booking: FakeBookingService
) -> GatewayService:
    """A gateway with JWT auth and the default limits; bookings stay PENDING."""
    fake_booking.auto_complete = False
    return await start_gateway(sqlite_url, auth="jwt", jwt_hs256_secret=SECRET)


@pytest.fixture
async def stub(secured: GatewayService) -> AsyncIterator[Stub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{secured.grpc_port}") as channel:
        yield gateway_pb2_grpc.BookingGatewayServiceStub(channel)


@pytest.fixture
async def http(secured: GatewayService) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{secured.http_port}",
        timeout=30,
        limits=httpx.Limits(max_connections=300),
    ) as client:
        yield client


def trailing(err: grpc.aio.AioRpcError, key: str) -> str:
    metadata: Any = err.trailing_metadata() or ()
    return next((str(value) for k, value in metadata if k == key), "")


async def test_one_caller_cannot_open_5000_watches(
    secured: GatewayService, stub: Stub, http: httpx.AsyncClient
) -> None:
    booking = (
        await stub.CreateBooking(gw.CreateBookingRequest(user_id="bob", **BODY), metadata=grpc_bearer(BOB))
    ).booking
    limit = PER_CALLER
    watches: list[Any] = []
    refused: grpc.aio.AioRpcError | None = None
    try:
        for _ in range(5_000):
            call = stub.WatchBooking(
                gw.WatchBookingRequest(booking_id=booking.booking_id), metadata=grpc_bearer(BOB)
            )
            watches.append(call)
            try:
                await asyncio.wait_for(call.read(), 5)
            except grpc.aio.AioRpcError as exc:
                refused = exc
                break
        assert refused is not None, "all 5,000 watches were accepted"
        assert len(watches) == limit + 1
        assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert trailing(refused, "retry-after") == "1"

        # Waits count too, over both APIs.
        wait = gw.GetBookingRequest(booking_id=booking.booking_id)
        wait.wait.FromSeconds(10)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetBooking(wait, metadata=grpc_bearer(BOB))
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        response = await http.get(f"/v1/bookings/{booking.booking_id}?wait=10", headers=bearer(BOB))
        assert response.status_code == 429 and response.headers["retry-after"] == "1"
        assert response.json()["error"]["code"] == "RESOURCE_EXHAUSTED"
        # A plain read is no watch; another caller has watches of its own.
        assert (await http.get(f"/v1/bookings/{booking.booking_id}", headers=bearer(BOB))).status_code == 200
        alices = (
            await stub.CreateBooking(
                gw.CreateBookingRequest(user_id="alice", **BODY), metadata=grpc_bearer(ALICE)
            )
        ).booking
        theirs = stub.WatchBooking(
            gw.WatchBookingRequest(booking_id=alices.booking_id), metadata=grpc_bearer(ALICE)
        )
        assert (await theirs.read()).booking.booking_id == alices.booking_id
        theirs.cancel()
    finally:
        for call in watches:
            call.cancel()
    # Closed watches give their slots back.
    assert secured.core is not None
    limits = secured.core._limits
    assert limits is not None

    async def released() -> bool:
        return limits.open_watches == 0

    await eventually(released)
    again = stub.WatchBooking(
        gw.WatchBookingRequest(booking_id=booking.booking_id), metadata=grpc_bearer(BOB)
    )
    assert (await again.read()).booking.booking_id == booking.booking_id
    again.cancel()


async def test_one_caller_cannot_hold_many_http_waits(stub: Stub, http: httpx.AsyncClient) -> None:
    booking = (
        await stub.CreateBooking(gw.CreateBookingRequest(user_id="bob", **BODY), metadata=grpc_bearer(BOB))
    ).booking
    limit = PER_CALLER
    path = f"/v1/bookings/{booking.booking_id}?wait=1.5"
    responses = await asyncio.gather(*(http.get(path, headers=bearer(BOB)) for _ in range(limit + 20)))
    codes = sorted(r.status_code for r in responses)
    assert codes == [200] * limit + [429] * 20


async def test_creates_are_rate_limited_per_caller(
    start_gateway: StartGateway, sqlite_url: str, fake_booking: FakeBookingService
) -> None:
    gateway = await start_gateway(
        sqlite_url, auth="jwt", jwt_hs256_secret=SECRET, create_rate_per_second=0.5, create_burst=3
    )
    async with (
        grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.http_port}") as http,
    ):
        stub: Stub = gateway_pb2_grpc.BookingGatewayServiceStub(channel)
        for _ in range(3):
            await stub.CreateBooking(
                gw.CreateBookingRequest(user_id="bob", **BODY), metadata=grpc_bearer(BOB)
            )
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.CreateBooking(
                gw.CreateBookingRequest(user_id="bob", **BODY), metadata=grpc_bearer(BOB)
            )
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert trailing(err.value, "retry-after") == "2"  # a token every 2 s
        response = await http.post("/v1/bookings", json={"user_id": "bob", **BODY}, headers=bearer(BOB))
        assert response.status_code == 429 and response.headers["retry-after"] == "2"
        assert response.json()["error"]["code"] == "RESOURCE_EXHAUSTED"
        # Alice has a bucket of her own.
        alices = await http.post("/v1/bookings", json={"user_id": "alice", **BODY}, headers=bearer(ALICE))
        assert alices.status_code == 201


async def test_without_auth_only_the_global_limits_apply(
    start_gateway: StartGateway, sqlite_url: str, fake_booking: FakeBookingService
) -> None:
    fake_booking.auto_complete = False
    gateway = await start_gateway(
        sqlite_url, create_rate_per_second=0.1, create_burst=1, max_watches_per_caller=1, max_watches=5
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        stub: Stub = gateway_pb2_grpc.BookingGatewayServiceStub(channel)
        # No per-caller rate: every anonymous create passes.
        created = [
            (await stub.CreateBooking(gw.CreateBookingRequest(user_id="u", **BODY))).booking
            for _ in range(10)
        ]
        watches = [stub.WatchBooking(gw.WatchBookingRequest(booking_id=b.booking_id)) for b in created[:5]]
        try:
            for call in watches:
                await call.read()  # more than the per-caller limit: it does not apply
            extra = stub.WatchBooking(gw.WatchBookingRequest(booking_id=created[5].booking_id))
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await extra.read()
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # the gateway's total
        finally:
            for call in watches:
                call.cancel()
