"""GetBookingStats and ``GET /v1/stats``: asked of analytics over NATS, answered as the proto says.

Analytics is a stand-in (``analytics_standin``) serving the contract's subject
through the runtime's ``CommandServer``; the gateway, NATS and the fake booking
service are real processes or real code.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from choreo.analytics.v1 import queries_pb2
from choreo.commands import H_DEADLINE, H_REJECTED, REJECTED_OVERLOADED
from choreo.envelope import H_CORRELATION, H_ID, H_SOURCE, H_TYPE
from choreo.gateway.v1 import gateway_pb2 as gw
from choreo.gateway.v1 import gateway_pb2_grpc
from choreoctl.stack.natsserver import NatsServer
from gateway.api.http_models import BookingStatsJson
from gateway.application.principal import ADMIN_SCOPE
from gateway.build import GatewayService
from tests.gateway.analytics_standin import SUBJECT, StandInAnalytics
from tests.gateway.conftest import StartGateway
from tests.gateway.fakes import FakeBookingService
from tests.gateway.tokens import ALICE, SECRET, bearer, grpc_bearer, hs256
from tests.support import eventually

Stub = Any
SINCE = "2026-01-31T08:00:00.123456789Z"
UNTIL = "2026-02-01T00:00:00+02:00"


def ts(text: str) -> Timestamp:
    value = Timestamp()
    value.FromJsonString(text)
    return value


def error_field(err: grpc.aio.AioRpcError) -> str:
    metadata: Any = err.trailing_metadata() or ()
    return next((str(value) for key, value in metadata if key == "error-field"), "")


async def grpc_error(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    return err.value


@pytest.fixture
async def analytics(nc: NATS) -> AsyncIterator[StandInAnalytics]:
    async with StandInAnalytics(nc) as standin:
        yield standin


async def test_stats_over_grpc_carry_every_field_and_the_window(
    stub: Stub, analytics: StandInAnalytics
) -> None:
    started = time.time()
    request = gw.GetBookingStatsRequest(since=ts(SINCE), until=ts(UNTIL))
    stats = await stub.GetBookingStats(request, timeout=10)
    assert (stats.bookings_created, stats.bookings_confirmed, stats.bookings_cancelled) == (5, 3, 2)
    assert dict(stats.cancellation_reasons) == {"card_declined": 1, "insufficient_funds": 1}
    assert dict(stats.confirmed_amount_cents_by_currency) == {"EUR": 12_600, "USD": 700}
    assert (stats.settle_p50_ms, stats.settle_p95_ms, stats.settle_p99_ms) == (120.5, 480.0, 950.25)
    assert (stats.since, stats.until) == (ts(SINCE), ts(UNTIL))
    # The window reached analytics as asked, nanoseconds and offset included.
    [query] = analytics.queries
    assert (query.since, query.until) == (ts(SINCE), ts(UNTIL))
    # CloudEvents-style headers and a deadline, as the booking command has.
    [headers] = analytics.headers
    assert headers[H_TYPE] == "choreo.analytics.v1.BookingStatsQuery"
    assert headers[H_SOURCE] == "gateway" and headers[H_ID] and headers[H_CORRELATION]
    deadline = int(headers[H_DEADLINE]) / 1000
    # GATEWAY_STATS_TIMEOUT_SECONDS (5 s) less the margin (1 s) for the reply.
    assert started + 3.5 < deadline < time.time() + 4.5


async def test_an_unbounded_window_is_passed_unset(stub: Stub, analytics: StandInAnalytics) -> None:
    stats = await stub.GetBookingStats(gw.GetBookingStatsRequest(), timeout=10)
    [query] = analytics.queries
    assert not query.HasField("since") and not query.HasField("until")
    assert not stats.HasField("since") and stats.until.seconds >= int(time.time()) - 60


async def test_stats_over_http_are_the_proto_as_json(
    http: httpx.AsyncClient, analytics: StandInAnalytics
) -> None:
    # An unencoded "+" in a query string arrives as a space: read as the offset's sign.
    response = await http.get(f"/v1/stats?since={SINCE}&until={UNTIL}")
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == set(BookingStatsJson.model_fields)
    BookingStatsJson.model_validate(body)
    assert (body["bookings_created"], body["bookings_confirmed"], body["bookings_cancelled"]) == (
        "5",
        "3",
        "2",
    )  # int64 as in the protobuf JSON mapping, like amount_cents
    assert body["cancellation_reasons"] == {"card_declined": "1", "insufficient_funds": "1"}
    assert body["confirmed_amount_cents_by_currency"] == {"EUR": "12600", "USD": "700"}
    assert (body["settle_p50_ms"], body["settle_p95_ms"], body["settle_p99_ms"]) == (120.5, 480.0, 950.25)
    assert body["since"] == SINCE
    assert datetime.fromisoformat(body["until"]) == datetime.fromisoformat(UNTIL)
    [query] = analytics.queries
    assert (query.since, query.until) == (ts(SINCE), ts(UNTIL))

    encoded = await http.get("/v1/stats", params={"since": "2026-01-31t09:00:00+01:00"})
    assert encoded.status_code == 200
    assert analytics.queries[-1].since == ts("2026-01-31T08:00:00Z")
    assert not analytics.queries[-1].HasField("until")
    assert encoded.json()["since"] == "2026-01-31T08:00:00Z"


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"since": "yesterday"}, "since"),
        ({"since": "2026-01-31"}, "since"),
        ({"since": "2026-01-31T08:00:00"}, "since"),  # no offset: which day is that?
        ({"until": "2026-02-30T00:00:00Z"}, "until"),
        ({"since": "2026-02-01T00:00:00Z", "until": "2026-01-31T00:00:00Z"}, "until"),
        ({"since": "9999-12-31T23:59:59-01:00"}, "since"),  # past Timestamp's range
    ],
)
async def test_a_bad_window_is_400_naming_the_parameter_and_asks_nothing(
    http: httpx.AsyncClient, analytics: StandInAnalytics, params: dict[str, str], field: str
) -> None:
    response = await http.get("/v1/stats", params=params)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "INVALID_ARGUMENT"
    assert response.json()["error"]["field"] == field
    assert analytics.queries == []


async def test_a_bad_window_over_grpc_is_invalid_argument(stub: Stub, analytics: StandInAnalytics) -> None:
    outside = gw.GetBookingStatsRequest(since=Timestamp(seconds=10**12))
    err = await grpc_error(stub.GetBookingStats(outside))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and error_field(err) == "since"
    backwards = gw.GetBookingStatsRequest(since=ts(UNTIL), until=ts(SINCE))
    err = await grpc_error(stub.GetBookingStats(backwards))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and error_field(err) == "until"
    assert analytics.queries == []


async def test_analytics_refusing_a_field_is_invalid_argument_naming_it(
    nc: NATS, stub: Stub, http: httpx.AsyncClient
) -> None:
    def refuse(query: queries_pb2.BookingStatsQuery) -> queries_pb2.BookingStatsReply:
        return queries_pb2.BookingStatsReply(
            error=queries_pb2.QueryError(
                code=queries_pb2.QUERY_ERROR_CODE_INVALID_ARGUMENT,
                message="since: is before analytics' first booking",
                field="since",
            )
        )

    async with StandInAnalytics(nc, refuse):
        err = await grpc_error(stub.GetBookingStats(gw.GetBookingStatsRequest(since=ts(SINCE))))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and error_field(err) == "since"
        assert err.details() == "since: is before analytics' first booking"
        response = await http.get("/v1/stats", params={"since": SINCE})
        assert response.status_code == 400
        assert response.json()["error"] == {
            "code": "INVALID_ARGUMENT",
            "message": "is before analytics' first booking",
            "field": "since",
        }


async def test_analytics_unable_to_answer_is_unavailable(nc: NATS, http: httpx.AsyncClient) -> None:
    def down(query: queries_pb2.BookingStatsQuery) -> queries_pb2.BookingStatsReply:
        return queries_pb2.BookingStatsReply(
            error=queries_pb2.QueryError(
                code=queries_pb2.QUERY_ERROR_CODE_UNAVAILABLE, message="the database is unavailable"
            )
        )

    async with StandInAnalytics(nc, down):
        response = await http.get("/v1/stats")
    assert response.status_code == 503 and response.headers["retry-after"] == "1"
    assert "analytics is unavailable" in response.json()["error"]["message"]


async def test_without_analytics_stats_are_unavailable_and_nothing_else_breaks(
    stub: Stub, http: httpx.AsyncClient, fake_booking: FakeBookingService
) -> None:
    started = time.monotonic()
    err = await grpc_error(stub.GetBookingStats(gw.GetBookingStatsRequest(), timeout=10))
    assert time.monotonic() - started < 1.0  # no responders: at once, not after the timeout
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    assert "analytics is unavailable" in (err.details() or "")
    assert "no responders" in (err.details() or "")
    response = await http.get("/v1/stats", params={"since": SINCE})
    assert response.status_code == 503 and response.headers["retry-after"] == "1"
    assert response.json()["error"]["code"] == "UNAVAILABLE"
    assert "analytics is unavailable" in response.json()["error"]["message"]

    # The rest of the gateway does not depend on analytics: ready, creates and reads work.
    assert (await http.get("/readyz")).json() == {"status": "ok", "failures": {}}
    booking = (
        await stub.CreateBooking(
            gw.CreateBookingRequest(user_id="u1", amount_cents=100, currency="USD", payment_token="tok_visa")
        )
    ).booking
    got = await stub.GetBooking(gw.GetBookingRequest(booking_id=booking.booking_id))
    assert got.booking.booking_id == booking.booking_id
    read = await http.get(f"/v1/bookings/{booking.booking_id}")
    assert read.status_code == 200


async def test_a_slow_analytics_is_unavailable_after_the_timeout(
    nc: NATS, start_gateway: StartGateway, sqlite_url: str
) -> None:
    gateway: GatewayService = await start_gateway(sqlite_url, stats_timeout_seconds=0.5)
    async with (
        StandInAnalytics(nc, delay=1.5) as slow,
        grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.http_port}") as http,
    ):
        stub = gateway_pb2_grpc.BookingGatewayServiceStub(channel)
        started = time.monotonic()
        err = await grpc_error(stub.GetBookingStats(gw.GetBookingStatsRequest(), timeout=10))
        assert 0.45 < time.monotonic() - started < 1.4
        assert err.code() == grpc.StatusCode.UNAVAILABLE
        assert "analytics is unavailable" in (err.details() or "")
        assert "did not answer within 0.5s" in (err.details() or "")
        started = time.monotonic()
        response = await http.get("/v1/stats")
        assert 0.45 < time.monotonic() - started < 1.4
        assert response.status_code == 503
        # The client's own deadline, shorter than the gateway's timeout, wins.
        started = time.monotonic()
        err = await grpc_error(stub.GetBookingStats(gw.GetBookingStatsRequest(), timeout=0.3))
        assert time.monotonic() - started < 0.45
        assert err.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    assert slow.queries  # it was asked, just too slowly


async def test_an_overloaded_analytics_is_unavailable(nc: NATS, http: httpx.AsyncClient) -> None:
    async def reject(msg: Msg) -> None:
        await nc.publish(msg.reply, b"", headers={H_REJECTED: REJECTED_OVERLOADED})

    sub = await nc.subscribe(SUBJECT, queue="analytics", cb=reject)
    await nc.flush()
    try:
        response = await http.get("/v1/stats")
    finally:
        await sub.unsubscribe()
    assert response.status_code == 503
    assert response.json()["error"]["message"].startswith(
        "analytics is unavailable: the analytics service is overloaded"
    )


async def test_a_garbage_reply_is_internal_with_an_error_id(nc: NATS, http: httpx.AsyncClient) -> None:
    async def garbage(msg: Msg) -> None:
        await msg.respond(b"\xff\xfe not protobuf")

    sub = await nc.subscribe(SUBJECT, queue="analytics", cb=garbage)
    await nc.flush()
    try:
        response = await http.get("/v1/stats")
    finally:
        await sub.unsubscribe()
    assert response.status_code == 500
    error = response.json()["error"]
    assert error["error_id"] and "protobuf" not in error["message"]


async def test_openapi_shows_the_stats_route(http: httpx.AsyncClient) -> None:
    spec = (await http.get("/openapi.json")).json()
    stats = spec["paths"]["/v1/stats"]["get"]
    assert {p["name"] for p in stats["parameters"]} == {"since", "until"}
    assert {"200", "400", "401", "403", "503"} <= set(stats["responses"])
    assert stats["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/BookingStatsJson"
    )
    assert set(spec["components"]["schemas"]["BookingStatsJson"]["properties"]) == set(
        gw.GetBookingStatsResponse.DESCRIPTOR.fields_by_name
    )


async def test_stats_need_the_admin_scope(
    nc: NATS, start_gateway: StartGateway, sqlite_url: str, analytics: StandInAnalytics
) -> None:
    secured = await start_gateway(sqlite_url, auth="jwt", jwt_hs256_secret=SECRET)
    admin = hs256("operator", scope=f"bookings:read {ADMIN_SCOPE}")
    async with (
        grpc.aio.insecure_channel(f"127.0.0.1:{secured.grpc_port}") as channel,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{secured.http_port}") as http,
    ):
        stub = gateway_pb2_grpc.BookingGatewayServiceStub(channel)
        request = gw.GetBookingStatsRequest(since=ts(SINCE))
        err = await grpc_error(stub.GetBookingStats(request))
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED
        err = await grpc_error(stub.GetBookingStats(request, metadata=grpc_bearer(ALICE)))
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
        assert ADMIN_SCOPE in (err.details() or "")
        assert (await http.get("/v1/stats")).status_code == 401
        denied = await http.get("/v1/stats", params={"since": SINCE}, headers=bearer(ALICE))
        assert denied.status_code == 403 and denied.json()["error"]["code"] == "PERMISSION_DENIED"
        # Refused before its parameters are read: a malformed one tells a non-admin nothing more.
        malformed = await http.get("/v1/stats", params={"since": "yesterday"}, headers=bearer(ALICE))
        assert malformed.status_code == 403
        assert analytics.queries == []  # nothing asked for a caller who may not see it

        stats = await stub.GetBookingStats(request, metadata=grpc_bearer(admin))
        assert stats.bookings_created == 5
        allowed = await http.get("/v1/stats", params={"since": SINCE}, headers=bearer(admin))
        assert allowed.status_code == 200 and allowed.json()["bookings_created"] == "5"
    assert len(analytics.queries) == 2


async def test_nats_down_is_unavailable_at_once(
    nats_server: NatsServer, gateway: GatewayService, http: httpx.AsyncClient
) -> None:
    nc = gateway.nc
    assert nc is not None
    nats_server.kill()
    try:
        await eventually(lambda: not nc.is_connected)
        started = time.monotonic()
        response = await http.get("/v1/stats")
        assert time.monotonic() - started < 1.0
        assert response.status_code == 503
        assert response.json()["error"]["message"] == (
            "analytics is unavailable: the gateway is not connected to NATS; retry later"
        )
    finally:
        nats_server.start()
