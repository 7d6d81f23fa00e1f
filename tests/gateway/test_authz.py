"""The attacks of issue 9 on the gateway's callers, over gRPC and HTTP, with real tokens.

Each ran against the gateway before authentication (commit e82bd38) and failed
there: anyone could list every user's bookings, read any booking or trace,
create bookings as any user, and join another user's workflow by choosing its
correlation id. (Squatting an idempotency key runs against the real booking
service, in ``test_authz_idempotency.py``.)
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from choreo.gateway.v1 import gateway_pb2 as gw
from choreo.gateway.v1 import gateway_pb2_grpc
from gateway.application.principal import ADMIN_SCOPE
from gateway.build import GatewayService
from tests.gateway.conftest import StartGateway
from tests.gateway.fakes import FakeBookingService
from tests.gateway.tokens import ALICE, BOB, SECRET, bearer, grpc_bearer, hs256
from tests.support import eventually

Stub = Any
GRACE = 0.4
ADMIN = hs256("operator", scope=f"bookings:read {ADMIN_SCOPE}")
BODY = {"amount_cents": 4200, "currency": "EUR", "payment_token": "tok_visa"}


def request(user: str = "", **fields: Any) -> gw.CreateBookingRequest:
    return gw.CreateBookingRequest(user_id=user, **{**BODY, **fields})


def trailing(err: grpc.aio.AioRpcError, key: str) -> str:
    metadata: Any = err.trailing_metadata() or ()
    return next((str(value) for k, value in metadata if k == key), "")


@pytest.fixture
async def secured(
    start_gateway: StartGateway, sqlite_url: str, fake_booking: FakeBookingService
) -> GatewayService:
    return await start_gateway(sqlite_url, auth="jwt", jwt_hs256_secret=SECRET, not_found_grace_seconds=GRACE)


@pytest.fixture
async def channel(secured: GatewayService) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{secured.grpc_port}") as ch:
        yield ch


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> Stub:
    return gateway_pb2_grpc.BookingGatewayServiceStub(channel)


@pytest.fixture
async def http(secured: GatewayService) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{secured.http_port}", timeout=15) as client:
        yield client


async def grpc_error(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    return err.value


async def create(stub: Stub, token: str, user: str, correlation: str = "") -> gw.Booking:
    metadata = grpc_bearer(token) + ((("x-correlation-id", correlation),) if correlation else ())
    return (await stub.CreateBooking(request(user), metadata=metadata)).booking


# -- authentication ---------------------------------------------------------------------------------


async def test_no_token_no_api(stub: Stub, http: httpx.AsyncClient) -> None:
    err = await grpc_error(stub.ListBookings(gw.ListBookingsRequest()))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert trailing(err, "www-authenticate") == "Bearer"
    err = await grpc_error(stub.CreateBooking(request("alice"), metadata=grpc_bearer(hs256(ttl=-60))))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert trailing(err, "www-authenticate") == 'Bearer error="invalid_token"'
    updates = stub.WatchBooking(gw.WatchBookingRequest(booking_id="b-1"))
    err = await grpc_error(updates.read())
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED

    for method, path in [("GET", "/v1/bookings"), ("POST", "/v1/bookings"), ("GET", "/v1/traces/wf-1")]:
        response = await http.request(method, path, json={"user_id": "alice", **BODY})
        assert response.status_code == 401, (path, response.text)
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json()["error"] | {"message": ""} == {
            "code": "UNAUTHENTICATED",
            "message": "",
            "field": "",
        }
    bad = await http.get("/v1/bookings", headers=bearer(hs256(secret="x" * 40)))
    assert bad.status_code == 401 and bad.headers["www-authenticate"] == 'Bearer error="invalid_token"'


async def test_health_metrics_docs_and_reflection_stay_open(
    secured: GatewayService, channel: grpc.aio.Channel, http: httpx.AsyncClient
) -> None:
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"):
        assert (await http.get(path)).status_code == 200, path
    health = health_pb2_grpc.HealthStub(channel)
    assert (
        await health.Check(health_pb2.HealthCheckRequest())
    ).status == health_pb2.HealthCheckResponse.SERVING
    reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
    replies = reflect.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    names = [s.name async for reply in replies for s in reply.list_services_response.service]
    assert "choreo.gateway.v1.BookingGatewayService" in names


async def test_openapi_declares_the_bearer_scheme(http: httpx.AsyncClient) -> None:
    schema = (await http.get("/openapi.json")).json()
    schemes = schema["components"]["securitySchemes"]
    assert [s["scheme"] for s in schemes.values()] == ["bearer"]
    for path, operations in schema["paths"].items():
        for operation in operations.values():
            assert bool(operation.get("security")) == path.startswith("/v1/"), path
            if path.startswith("/v1/"):
                assert {"401", "403", "429"} <= set(operation["responses"]), path


# -- authorization ----------------------------------------------------------------------------------


async def test_create_as_another_user_is_denied(stub: Stub, http: httpx.AsyncClient) -> None:
    err = await grpc_error(stub.CreateBooking(request("alice"), metadata=grpc_bearer(BOB)))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED and trailing(err, "error-field") == "user_id"
    response = await http.post("/v1/bookings", json={"user_id": "alice", **BODY}, headers=bearer(BOB))
    assert response.status_code == 403 and response.json()["error"]["field"] == "user_id"
    # Without a user_id, or with its own, the booking is the caller's.
    assert (await create(stub, BOB, "")).user_id == "bob"
    assert (await create(stub, BOB, "bob")).user_id == "bob"
    own = await http.post("/v1/bookings", json=BODY, headers=bearer(BOB))
    assert own.status_code == 201 and own.json()["user_id"] == "bob"
    # An admin may book for anyone.
    assert (await create(stub, ADMIN, "alice")).user_id == "alice"


async def test_nobody_lists_everyones_bookings(
    stub: Stub, http: httpx.AsyncClient, fake_booking: FakeBookingService
) -> None:
    alices = await create(stub, ALICE, "alice")
    bobs = await create(stub, BOB, "bob")
    listed = await stub.ListBookings(gw.ListBookingsRequest(), metadata=grpc_bearer(BOB))
    assert [b.booking_id for b in listed.bookings] == [bobs.booking_id]
    page = await http.get("/v1/bookings", headers=bearer(BOB))
    assert [b["booking_id"] for b in page.json()["bookings"]] == [bobs.booking_id]

    err = await grpc_error(
        stub.ListBookings(gw.ListBookingsRequest(user_id="alice"), metadata=grpc_bearer(BOB))
    )
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED and trailing(err, "error-field") == "user_id"
    denied = await http.get("/v1/bookings", params={"user_id": "alice"}, headers=bearer(BOB))
    assert denied.status_code == 403 and denied.json()["error"]["field"] == "user_id"

    everyone = await stub.ListBookings(gw.ListBookingsRequest(), metadata=grpc_bearer(ADMIN))
    assert {b.booking_id for b in everyone.bookings} == {alices.booking_id, bobs.booking_id}


async def test_another_users_booking_is_not_found_like_a_missing_one(
    stub: Stub, http: httpx.AsyncClient, fake_booking: FakeBookingService
) -> None:
    alices = await create(stub, ALICE, "alice")
    theirs, missing = alices.booking_id, "no-such-booking"
    for booking_id in (theirs, missing):
        started = time.monotonic()
        err = await grpc_error(
            stub.GetBooking(gw.GetBookingRequest(booking_id=booking_id), metadata=grpc_bearer(BOB))
        )
        took = time.monotonic() - started
        assert err.code() == grpc.StatusCode.NOT_FOUND
        assert err.details() == f"booking_id: booking {booking_id} not found"
        # As slow as a missing booking's grace wait: the time taken says nothing either.
        assert GRACE * 0.9 <= took < GRACE + 1.0, (booking_id, took)

        wait = gw.GetBookingRequest(booking_id=booking_id)
        wait.wait.FromSeconds(2)
        err = await grpc_error(stub.GetBooking(wait, metadata=grpc_bearer(BOB)))
        assert err.code() == grpc.StatusCode.NOT_FOUND
        updates = stub.WatchBooking(gw.WatchBookingRequest(booking_id=booking_id), metadata=grpc_bearer(BOB))
        err = await grpc_error(updates.read())
        assert err.code() == grpc.StatusCode.NOT_FOUND

        for path in (f"/v1/bookings/{booking_id}", f"/v1/bookings/{booking_id}?wait=2"):
            response = await http.get(path, headers=bearer(BOB))
            assert response.status_code == 404
            assert response.json() == {
                "error": {
                    "code": "NOT_FOUND",
                    "message": f"booking {booking_id} not found",
                    "field": "booking_id",
                }
            }
    mine = await stub.GetBooking(gw.GetBookingRequest(booking_id=theirs), metadata=grpc_bearer(ALICE))
    assert mine.booking.user_id == "alice"
    assert (await http.get(f"/v1/bookings/{theirs}", headers=bearer(ADMIN))).status_code == 200


async def test_nobody_reads_another_users_trace(
    stub: Stub, http: httpx.AsyncClient, fake_booking: FakeBookingService
) -> None:
    alices = await create(stub, ALICE, "alice", correlation="wf-alice")

    async def traced() -> bool:
        response = await http.get("/v1/traces/wf-alice", headers=bearer(ALICE))
        return response.status_code == 200 and len(response.json()["events"]) >= 3

    await eventually(traced)
    by_booking = gw.GetWorkflowTraceRequest(booking_id=alices.booking_id)
    assert len((await stub.GetWorkflowTrace(by_booking, metadata=grpc_bearer(ALICE))).events) >= 3
    assert (await stub.GetWorkflowTrace(by_booking, metadata=grpc_bearer(ADMIN))).events

    for key, value in (("booking_id", alices.booking_id), ("correlation_id", "wf-alice")):
        err = await grpc_error(
            stub.GetWorkflowTrace(gw.GetWorkflowTraceRequest(**{key: value}), metadata=grpc_bearer(BOB))
        )
        missing = await grpc_error(
            stub.GetWorkflowTrace(
                gw.GetWorkflowTraceRequest(**{key: "nothing-" + key}), metadata=grpc_bearer(BOB)
            )
        )
        assert err.code() == missing.code() == grpc.StatusCode.NOT_FOUND
        assert err.details().replace(value, "X") == missing.details().replace("nothing-" + key, "X")
    for path in (f"/v1/bookings/{alices.booking_id}/trace", "/v1/traces/wf-alice"):
        response = await http.get(path, headers=bearer(BOB))
        assert response.status_code == 404 and response.json()["error"]["code"] == "NOT_FOUND"


async def test_nobody_injects_facts_into_another_users_trace(
    stub: Stub, http: httpx.AsyncClient, fake_booking: FakeBookingService
) -> None:
    await create(stub, ALICE, "alice", correlation="wf-alice")

    async def traced() -> bool:
        return (await http.get("/v1/traces/wf-alice", headers=bearer(ALICE))).status_code == 200

    await eventually(traced)
    before = fake_booking.requests
    err = await grpc_error(
        stub.CreateBooking(request("bob"), metadata=(*grpc_bearer(BOB), ("x-correlation-id", "wf-alice")))
    )
    assert (
        err.code() == grpc.StatusCode.PERMISSION_DENIED and trailing(err, "error-field") == "correlation_id"
    )
    response = await http.post(
        "/v1/bookings",
        json={"user_id": "bob", **BODY},
        headers={**bearer(BOB), "X-Correlation-Id": "wf-alice"},
    )
    assert response.status_code == 403 and response.json()["error"]["field"] == "correlation_id"
    assert fake_booking.requests == before  # nothing was sent
    # A new id is fine, and so is the caller's own workflow; an admin may join any.
    assert (await create(stub, BOB, "bob", correlation="wf-bob")).correlation_id == "wf-bob"
    assert (await create(stub, ALICE, "alice", correlation="wf-alice")).correlation_id == "wf-alice"
    assert (await create(stub, ADMIN, "alice", correlation="wf-alice")).correlation_id == "wf-alice"
