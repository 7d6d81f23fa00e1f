"""CancelBooking over gRPC and HTTP (issue 12), with the fake booking service answering cmd.booking.cancel."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx
import pytest

from choreo.envelope import H_CORRELATION
from choreo.gateway.v1 import gateway_pb2 as gw
from choreo.gateway.v1 import gateway_pb2_grpc
from gateway.application.principal import ADMIN_SCOPE
from gateway.build import GatewayService
from gateway.readmodel.model import Status
from tests.gateway.conftest import StartGateway
from tests.gateway.fakes import FakeBookingService
from tests.gateway.tokens import ALICE, BOB, SECRET, bearer, grpc_bearer, hs256
from tests.support import eventually

Stub = Any
BODY = {"amount_cents": 4200, "currency": "EUR", "payment_token": "tok_visa"}
ADMIN = hs256("operator", scope=ADMIN_SCOPE)


def create_request(user: str = "user-1", token: str = "tok_visa") -> gw.CreateBookingRequest:
    return gw.CreateBookingRequest(user_id=user, amount_cents=4200, currency="EUR", payment_token=token)


async def grpc_error(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    return err.value


def cancel(booking_id: str) -> gw.CancelBookingRequest:
    return gw.CancelBookingRequest(booking_id=booking_id)


async def settled(stub: Stub, booking_id: str) -> gw.Booking:
    wait = gw.GetBookingRequest(booking_id=booking_id)
    wait.wait.FromSeconds(10)
    booking: gw.Booking = (await stub.GetBooking(wait)).booking
    return booking


# -- without authentication: every caller acts for every user ---------------------------------------


async def test_a_confirmed_booking_is_cancelled_over_grpc_and_read_at_once(
    stub: Stub, gateway: GatewayService, fake_booking: FakeBookingService
) -> None:
    created = (await stub.CreateBooking(create_request())).booking
    assert (await settled(stub, created.booking_id)).status == gw.BOOKING_STATUS_CONFIRMED
    payment_id = fake_booking.bookings[created.booking_id].payment_id

    cancelled = (await stub.CancelBooking(cancel(created.booking_id))).booking
    assert cancelled.status == gw.BOOKING_STATUS_CANCELLED
    assert (cancelled.cancellation_reason, cancelled.payment_id) == ("cancelled_by_user", payment_id)
    assert (cancelled.user_id, cancelled.amount_cents) == ("user-1", 4200)
    command = fake_booking.cancels[-1]
    assert (command.booking_id, command.user_id, command.any_user) == (created.booking_id, "", True)
    # The command runs in the booking's workflow.
    assert fake_booking.last_headers[H_CORRELATION] == created.correlation_id
    # Read-your-writes: the read model has it before the answer.
    got = (await stub.GetBooking(gw.GetBookingRequest(booking_id=created.booking_id))).booking
    assert got.status == gw.BOOKING_STATUS_CANCELLED and got.cancellation_reason == "cancelled_by_user"

    # Cancelling again: FAILED_PRECONDITION, and nothing changes.
    err = await grpc_error(stub.CancelBooking(cancel(created.booking_id)))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "already CANCELLED" in (err.details() or "")

    # The BookingCancelled is projected and traced; the booking stays CANCELLED.
    async def traced() -> list[str]:
        trace = await stub.GetWorkflowTrace(gw.GetWorkflowTraceRequest(booking_id=created.booking_id))
        types = [e.event_type for e in trace.events]
        return types if "choreo.booking.v1.BookingCancelled" in types else []

    types = await eventually(traced)
    assert types[-1] == "choreo.booking.v1.BookingCancelled" and "choreo.booking.v1.BookingConfirmed" in types
    got = (await stub.GetBooking(gw.GetBookingRequest(booking_id=created.booking_id))).booking
    assert got.status == gw.BOOKING_STATUS_CANCELLED


async def test_late_facts_after_the_cancel_do_not_uncancel(
    stub: Stub, gateway: GatewayService, fake_booking: FakeBookingService
) -> None:
    fake_booking.auto_complete = False
    created = (await stub.CreateBooking(create_request())).booking
    cancelled = (await stub.CancelBooking(cancel(created.booking_id))).booking
    assert cancelled.status == gw.BOOKING_STATUS_CANCELLED
    # The payment's outcome (and a BookingConfirmed) arrive after the cancel's reply was recorded.
    await fake_booking.settled()
    await fake_booking.complete(created.booking_id)
    assert gateway.store is not None
    store = gateway.store

    async def all_projected() -> bool:
        trace = await store.trace(created.correlation_id)
        return len(trace) == 4  # created, cancelled, payment, confirmed

    await eventually(all_projected)
    view = await store.get(created.booking_id)
    assert view is not None and view.status is Status.CANCELLED
    assert view.cancellation_reason == "cancelled_by_user"
    got = (await stub.GetBooking(gw.GetBookingRequest(booking_id=created.booking_id))).booking
    assert got.status == gw.BOOKING_STATUS_CANCELLED


async def test_cancel_over_http(http: httpx.AsyncClient, fake_booking: FakeBookingService) -> None:
    fake_booking.auto_complete = False
    created = (await http.post("/v1/bookings", json={"user_id": "user-1", **BODY})).json()
    booking_id = created["booking_id"]
    response = await http.post(f"/v1/bookings/{booking_id}:cancel")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "BOOKING_STATUS_CANCELLED" and body["cancellation_reason"] == "cancelled_by_user"
    # The same JSON as a read of the booking.
    read = await http.get(f"/v1/bookings/{booking_id}")
    assert read.json() == body
    assert set(body) == set(created)

    again = await http.post(f"/v1/bookings/{booking_id}:cancel")
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "FAILED_PRECONDITION"

    missing = await http.post("/v1/bookings/no-such-booking:cancel")
    assert missing.status_code == 404
    assert missing.json() == {
        "error": {"code": "NOT_FOUND", "message": "booking no-such-booking not found", "field": "booking_id"}
    }
    bad = await http.post("/v1/bookings/has%20space:cancel")
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "booking_id"


async def test_a_declined_booking_cannot_be_cancelled(stub: Stub, fake_booking: FakeBookingService) -> None:
    created = (await stub.CreateBooking(create_request(token="tok_chargeDeclined"))).booking
    assert (await settled(stub, created.booking_id)).status == gw.BOOKING_STATUS_CANCELLED
    err = await grpc_error(stub.CancelBooking(cancel(created.booking_id)))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_unknown_booking_is_not_found_over_grpc(stub: Stub, fake_booking: FakeBookingService) -> None:
    err = await grpc_error(stub.CancelBooking(cancel("no-such-booking")))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert err.details() == "booking_id: booking no-such-booking not found"
    err = await grpc_error(stub.CancelBooking(cancel("")))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert len(fake_booking.cancels) == 1  # the empty id was refused before asking


async def test_a_booking_service_that_does_not_answer_is_unavailable(
    stub: Stub, http: httpx.AsyncClient, fake_booking: FakeBookingService
) -> None:
    fake_booking.auto_complete = False
    created = (await stub.CreateBooking(create_request())).booking
    await fake_booking.stop_cancels()
    started = time.monotonic()
    err = await grpc_error(stub.CancelBooking(cancel(created.booking_id), timeout=10))
    assert time.monotonic() - started < 1.0
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    assert "no responders" in (err.details() or "") and "was not cancelled" in (err.details() or "")
    response = await http.post(f"/v1/bookings/{created.booking_id}:cancel")
    assert response.status_code == 503 and response.headers["retry-after"] == "1"
    assert response.json()["error"]["code"] == "UNAVAILABLE"
    # Nothing changed in the read model.
    got = (await stub.GetBooking(gw.GetBookingRequest(booking_id=created.booking_id))).booking
    assert got.status == gw.BOOKING_STATUS_PENDING
    # Back: a retry cancels it.
    await fake_booking.answer_cancels()

    async def retried() -> gw.Booking | None:
        try:
            booking: gw.Booking = (await stub.CancelBooking(cancel(created.booking_id))).booking
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAVAILABLE
            return None
        return booking

    assert (await eventually(retried)).status == gw.BOOKING_STATUS_CANCELLED


async def test_openapi_documents_the_cancel_route(http: httpx.AsyncClient) -> None:
    schema = (await http.get("/openapi.json")).json()
    operation = schema["paths"]["/v1/bookings/{booking_id}:cancel"]["post"]
    assert {"200", "400", "404", "409", "503"} <= set(operation["responses"])
    ok = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok == {"$ref": "#/components/schemas/BookingJson"}
    assert "cancelled_by_user" in operation["description"]


# -- with authentication: only the booking's user, or an admin --------------------------------------


@pytest.fixture
async def secured(
    start_gateway: StartGateway, sqlite_url: str, fake_booking: FakeBookingService
) -> GatewayService:
    fake_booking.auto_complete = False
    return await start_gateway(sqlite_url, auth="jwt", jwt_hs256_secret=SECRET)


@pytest.fixture
async def secured_stub(secured: GatewayService) -> AsyncIterator[Stub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{secured.grpc_port}") as channel:
        yield gateway_pb2_grpc.BookingGatewayServiceStub(channel)


@pytest.fixture
async def secured_http(secured: GatewayService) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{secured.http_port}", timeout=15) as client:
        yield client


async def test_only_the_bookings_user_or_an_admin_cancels(
    secured_stub: Stub, secured_http: httpx.AsyncClient, fake_booking: FakeBookingService
) -> None:
    stub, http = secured_stub, secured_http
    alices = [
        (await stub.CreateBooking(create_request(user=""), metadata=grpc_bearer(ALICE))).booking
        for _ in range(3)
    ]
    # No token: 401, nothing asked.
    assert (await http.post(f"/v1/bookings/{alices[0].booking_id}:cancel")).status_code == 401
    err = await grpc_error(stub.CancelBooking(cancel(alices[0].booking_id)))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert fake_booking.cancels == []

    # Bob is told NOT_FOUND, as about a booking that does not exist; the booking is untouched.
    err = await grpc_error(stub.CancelBooking(cancel(alices[0].booking_id), metadata=grpc_bearer(BOB)))
    missing = await grpc_error(stub.CancelBooking(cancel("no-such-booking"), metadata=grpc_bearer(BOB)))
    assert err.code() == missing.code() == grpc.StatusCode.NOT_FOUND
    assert err.details().replace(alices[0].booking_id, "X") == missing.details().replace(
        "no-such-booking", "X"
    )
    response = await http.post(f"/v1/bookings/{alices[0].booking_id}:cancel", headers=bearer(BOB))
    assert response.status_code == 404 and response.json()["error"]["code"] == "NOT_FOUND"
    assert all((c.user_id, c.any_user) == ("bob", False) for c in fake_booking.cancels)
    got = await stub.GetBooking(
        gw.GetBookingRequest(booking_id=alices[0].booking_id), metadata=grpc_bearer(ALICE)
    )
    assert got.booking.status == gw.BOOKING_STATUS_PENDING

    # Alice cancels her own, over gRPC and HTTP.
    mine = await stub.CancelBooking(cancel(alices[0].booking_id), metadata=grpc_bearer(ALICE))
    assert mine.booking.status == gw.BOOKING_STATUS_CANCELLED
    assert (fake_booking.cancels[-1].user_id, fake_booking.cancels[-1].any_user) == ("alice", False)
    response = await http.post(f"/v1/bookings/{alices[1].booking_id}:cancel", headers=bearer(ALICE))
    assert response.status_code == 200 and response.json()["status"] == "BOOKING_STATUS_CANCELLED"

    # An admin acts for every user.
    response = await http.post(f"/v1/bookings/{alices[2].booking_id}:cancel", headers=bearer(ADMIN))
    assert response.status_code == 200 and response.json()["user_id"] == "alice"
    assert (fake_booking.cancels[-1].user_id, fake_booking.cancels[-1].any_user) == ("operator", True)


async def test_cancels_count_against_the_callers_command_rate(
    start_gateway: StartGateway, sqlite_url: str, fake_booking: FakeBookingService
) -> None:
    fake_booking.auto_complete = False
    gateway = await start_gateway(
        sqlite_url, auth="jwt", jwt_hs256_secret=SECRET, create_rate_per_second=0.01, create_burst=2
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        stub = gateway_pb2_grpc.BookingGatewayServiceStub(channel)
        created = (await stub.CreateBooking(create_request(user=""), metadata=grpc_bearer(ALICE))).booking
        await stub.CancelBooking(cancel(created.booking_id), metadata=grpc_bearer(ALICE))
        err = await grpc_error(stub.CancelBooking(cancel(created.booking_id), metadata=grpc_bearer(ALICE)))
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert len(fake_booking.cancels) == 1
        # Another caller has its own bucket.
        err = await grpc_error(stub.CancelBooking(cancel(created.booking_id), metadata=grpc_bearer(BOB)))
        assert err.code() == grpc.StatusCode.NOT_FOUND


async def test_a_watch_of_a_pending_booking_ends_with_its_cancellation(
    stub: Stub, fake_booking: FakeBookingService
) -> None:
    fake_booking.auto_complete = False
    created = (await stub.CreateBooking(create_request())).booking
    updates = stub.WatchBooking(gw.WatchBookingRequest(booking_id=created.booking_id), timeout=10)
    first = await updates.read()
    assert first.booking.status == gw.BOOKING_STATUS_PENDING
    await stub.CancelBooking(cancel(created.booking_id))
    rest = []
    while (update := await updates.read()) is not grpc.aio.EOF:
        rest.append(update.booking)
    assert [b.status for b in rest][-1:] == [gw.BOOKING_STATUS_CANCELLED]
    assert rest[-1].cancellation_reason == "cancelled_by_user"
