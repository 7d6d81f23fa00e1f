"""Error hygiene: no exception text, SQL or stack to clients; every error in the documented shape.

Attacks: an unexpected exception used to answer gRPC UNKNOWN with the exception
text and HTTP plain-text 500; a request that is not protobuf, gRPC UNKNOWN with
the decoder's text; ``/readyz`` showed the database exception to anyone.
"""

from __future__ import annotations

import logging
from typing import Any

import grpc
import httpx
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from choreo.gateway.v1 import gateway_pb2 as gw
from choreo.gateway.v1 import gateway_pb2_grpc
from choreoctl.stack.natsserver import NatsServer
from gateway.application.errors import ErrorCode, GatewayError
from gateway.build import GatewayService
from tests.gateway.conftest import StartGateway
from tests.gateway.fakes import FakeBookingService
from tests.support import eventually

SECRET = "SELECT payment_token FROM bookings WHERE user_id = 'alice'"
GET_BOOKING = "/choreo.gateway.v1.BookingGatewayService/GetBooking"


class Boom(RuntimeError):
    pass


async def explode(*_args: Any, **_kwargs: Any) -> None:
    raise Boom(SECRET)


def logged_error_ids(caplog: pytest.LogCaptureFixture) -> dict[str, logging.LogRecord]:
    return {r.error_id: r for r in caplog.records if hasattr(r, "error_id")}  # type: ignore[attr-defined]


async def test_an_unexpected_exception_is_a_generic_500_with_an_error_id_in_the_log(
    gateway: GatewayService,
    http: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(gateway.store, "get", explode)
    response = await http.get("/v1/bookings/b-1")
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == "INTERNAL" and error["field"] == ""
    assert SECRET not in response.text and "Boom" not in response.text and "Traceback" not in response.text
    record = logged_error_ids(caplog)[error["error_id"]]
    assert record.exc_info is not None and isinstance(
        record.exc_info[1], Boom
    )  # the traceback, once, in the log
    assert "GET /v1/bookings/b-1" in record.getMessage()


async def test_an_unexpected_exception_is_grpc_internal_with_an_error_id(
    gateway: GatewayService, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(gateway.store, "get", explode)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        stub: Any = channel.unary_unary(
            GET_BOOKING,
            request_serializer=gw.GetBookingRequest.SerializeToString,
            response_deserializer=gw.GetBookingResponse.FromString,
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub(gw.GetBookingRequest(booking_id="b-1"))
    err = caught.value
    assert err.code() == grpc.StatusCode.INTERNAL
    details = err.details() or ""
    assert SECRET not in details and "Boom" not in details
    metadata = dict(err.trailing_metadata() or ())
    error_id = str(metadata["error-id"])
    assert details.endswith(error_id)
    assert logged_error_ids(caplog)[error_id].exc_info is not None


async def test_an_internal_error_of_the_gateway_shows_its_detail_only_in_the_log(
    gateway: GatewayService,
    http: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """INTERNAL raised on purpose (a bad reply of the booking service, say) gets an error id too."""

    async def internal(*_args: Any, **_kwargs: Any) -> None:
        raise GatewayError(ErrorCode.INTERNAL, SECRET)

    assert gateway.core is not None
    monkeypatch.setattr(gateway.core, "get", internal)
    response = await http.get("/v1/bookings/b-1")
    assert response.status_code == 500 and SECRET not in response.text
    error_id = response.json()["error"]["error_id"]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        stub: Any = gateway_pb2_grpc.BookingGatewayServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetBooking(gw.GetBookingRequest(booking_id="b-1"))
    assert caught.value.code() == grpc.StatusCode.INTERNAL and SECRET not in (caught.value.details() or "")
    grpc_id = str(dict(caught.value.trailing_metadata() or ())["error-id"])
    logged = logged_error_ids(caplog)
    assert SECRET in logged[error_id].getMessage() and SECRET in logged[grpc_id].getMessage()


@pytest.mark.parametrize("raw", [b"\x0a\xff", b"\x0a\x02\xff\xfe", b"\xff\xff\xff\xff"])
async def test_a_request_that_is_not_protobuf_is_invalid_argument(
    gateway: GatewayService, raw: bytes
) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        call: Any = channel.unary_unary(GET_BOOKING)  # bytes in, bytes out
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call(raw)
        watch: Any = channel.unary_stream("/choreo.gateway.v1.BookingGatewayService/WatchBooking")
        with pytest.raises(grpc.aio.AioRpcError) as watched:
            async for _ in watch(raw):
                pass
    for err in (caught.value, watched.value):
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err
        assert "Error" not in (err.details() or "")


async def test_every_http_error_is_in_the_documented_shape(http: httpx.AsyncClient) -> None:
    cases = [
        (await http.get("/v1/nothing-here"), 404, "NOT_FOUND"),
        (await http.delete("/v1/bookings"), 405, "UNIMPLEMENTED"),
        (await http.post("/v1/bookings", content=b"{" * 20_000), 413, "RESOURCE_EXHAUSTED"),
        (await http.post("/v1/bookings", content=b"\xff"), 400, "INVALID_ARGUMENT"),
        (await http.get("/v1/bookings/b-unknown"), 404, "NOT_FOUND"),
    ]
    for response, status, code in cases:
        assert response.status_code == status, response.text
        assert response.headers["content-type"] == "application/json", response.request.url
        assert response.json()["error"]["code"] == code


async def test_readyz_names_the_failing_check_not_the_exception(
    gateway: GatewayService,
    http: httpx.AsyncClient,
    nats_server: NatsServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(gateway.store, "ping", explode)
    ready = await http.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["failures"] == {"database": "unavailable"}
    assert SECRET not in ready.text and "Boom" not in ready.text
    assert any(SECRET in r.getMessage() for r in caplog.records)  # the operator still learns why

    nats_server.kill()

    async def nats_down() -> bool:
        return (await http.get("/readyz")).json()["failures"].get("nats") == "disconnected"

    await eventually(nats_down)


async def test_reflection_and_docs_are_on_by_default(
    gateway: GatewayService, http: httpx.AsyncClient
) -> None:
    assert (await http.get("/docs")).status_code == 200
    assert (await http.get("/redoc")).status_code == 200
    assert (await http.get("/openapi.json")).status_code == 200
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        assert await _services(channel)


async def test_reflection_and_docs_can_be_turned_off(
    start_gateway: StartGateway, sqlite_url: str, fake_booking: FakeBookingService
) -> None:
    gateway = await start_gateway(sqlite_url, grpc_reflection=False, http_docs=False)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.http_port}") as http:
        assert (await http.get("/docs")).status_code == 404
        assert (await http.get("/redoc")).status_code == 404
        assert (await http.get("/openapi.json")).status_code == 200  # the contract stays published
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _services(channel)
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def _services(channel: grpc.aio.Channel) -> set[str]:
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    names: set[str] = set()
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    async for response in reflection.ServerReflectionInfo(iter([request])):  # type: ignore[attr-defined]
        names |= {s.name for s in response.list_services_response.service}
    return names
