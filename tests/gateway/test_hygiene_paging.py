"""Attack: a forged page token (it used to return Python exception text, gRPC UNKNOWN, HTTP plain 500)."""

from __future__ import annotations

import base64
import json

import grpc
import httpx
import pytest

from choreo.gateway.v1 import gateway_pb2, gateway_pb2_grpc


def forged_token() -> str:
    """A well-formed token of the old, unsigned format whose position overflows the database's integers."""
    raw = json.dumps([1, 10**30, "b", "\x1f"]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


async def test_forged_page_token_is_invalid_argument_over_http(http: httpx.AsyncClient) -> None:
    response = await http.get("/v1/bookings", params={"page_token": forged_token()})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "INVALID_ARGUMENT" and error["field"] == "page_token"
    assert "Error" not in error["message"] and "int" not in error["message"]


async def test_forged_page_token_is_invalid_argument_over_grpc(
    stub: gateway_pb2_grpc.BookingGatewayServiceStub,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ListBookings(gateway_pb2.ListBookingsRequest(page_token=forged_token()))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (caught.value.details() or "").startswith("page_token:")
    assert "Error" not in (caught.value.details() or "")
