"""The HTTP API: the same operations as JSON, errors in one shape, OpenAPI that matches."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from choreo.metrics import parse
from gateway.api.http_models import BookingJson, ErrorJson, HealthJson, ListBookingsJson, WorkflowTraceJson
from tests.gateway.fakes import FakeBookingService

BODY = {"user_id": "user-1", "amount_cents": 4200, "currency": "EUR", "payment_token": "tok_visa"}


def error_of(response: httpx.Response) -> dict[str, Any]:
    detail: dict[str, Any] = ErrorJson.model_validate(response.json()).error.model_dump()
    return detail


async def test_create_answers_201_with_location_and_the_booking(
    http: httpx.AsyncClient, fake_booking: FakeBookingService
) -> None:
    fake_booking.auto_complete = False
    response = await http.post("/v1/bookings", json=BODY)
    assert response.status_code == 201, response.text
    booking = BookingJson.model_validate(response.json())
    assert response.headers["location"] == f"/v1/bookings/{booking.booking_id}"
    assert booking.status == "BOOKING_STATUS_PENDING"
    assert booking.amount_cents == "4200"  # int64 is a string in the protobuf JSON mapping
    assert set(response.json()) == set(BookingJson.model_fields)  # every field printed, snake_case
    read = await http.get(response.headers["location"])
    assert read.status_code == 200 and read.json()["booking_id"] == booking.booking_id


async def test_amount_may_be_a_string_as_in_protobuf_json(http: httpx.AsyncClient) -> None:
    response = await http.post("/v1/bookings", json={**BODY, "amount_cents": "1999"})
    assert response.status_code == 201 and response.json()["amount_cents"] == "1999"


async def test_idempotency_key_header(http: httpx.AsyncClient, fake_booking: FakeBookingService) -> None:
    first = await http.post("/v1/bookings", json=BODY, headers={"Idempotency-Key": "order-9"})
    again = await http.post("/v1/bookings", json=BODY, headers={"Idempotency-Key": "order-9"})
    assert first.status_code == again.status_code == 201
    assert first.json()["booking_id"] == again.json()["booking_id"]
    assert again.headers.get("idempotent-replayed") == "true" and "idempotent-replayed" not in first.headers
    assert len(fake_booking.bookings) == 1
    same_in_body = await http.post(
        "/v1/bookings", json={**BODY, "idempotency_key": "order-9"}, headers={"Idempotency-Key": "order-9"}
    )
    assert same_in_body.json()["booking_id"] == first.json()["booking_id"]

    clash = await http.post(
        "/v1/bookings", json={**BODY, "idempotency_key": "a"}, headers={"Idempotency-Key": "b"}
    )
    assert clash.status_code == 400 and error_of(clash)["field"] == "idempotency_key"
    conflict = await http.post(
        "/v1/bookings", json={**BODY, "amount_cents": 1}, headers={"Idempotency-Key": "order-9"}
    )
    assert conflict.status_code == 409
    assert error_of(conflict) | {"message": ""} == {
        "code": "ALREADY_EXISTS",
        "message": "",
        "field": "idempotency_key",
    }


async def test_correlation_id_header(http: httpx.AsyncClient, fake_booking: FakeBookingService) -> None:
    response = await http.post("/v1/bookings", json=BODY, headers={"X-Correlation-Id": "wf-123"})
    assert response.json()["correlation_id"] == "wf-123"


@pytest.mark.parametrize(
    "body,field",
    [
        ({**BODY, "user_id": ""}, "user_id"),
        ({k: v for k, v in BODY.items() if k != "user_id"}, "user_id"),
        ({**BODY, "amount_cents": 0}, "amount_cents"),
        ({**BODY, "amount_cents": "abc"}, "amount_cents"),
        ({**BODY, "amount_cents": 12.5}, "amount_cents"),
        ({**BODY, "amount_cents": True}, "amount_cents"),
        ({**BODY, "amount_cents": 2**70}, "amount_cents"),
        ({**BODY, "currency": "usd"}, "currency"),
        ({**BODY, "currency": 840}, "currency"),
        ({**BODY, "payment_token": "card-4242"}, "payment_token"),
        ({**BODY, "user_id": "x" * 300}, "user_id"),
        ({**BODY, "coupon": "FREE"}, "coupon"),
    ],
)
async def test_invalid_bodies_are_400_naming_the_field(
    http: httpx.AsyncClient, fake_booking: FakeBookingService, body: dict[str, Any], field: str
) -> None:
    response = await http.post("/v1/bookings", json=body)
    assert response.status_code == 400, response.text
    error = error_of(response)
    assert error["code"] == "INVALID_ARGUMENT" and error["field"] == field and error["message"]
    assert fake_booking.requests == 0


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b""])
async def test_a_body_that_is_not_a_json_object_is_400(
    http: httpx.AsyncClient, fake_booking: FakeBookingService, content: bytes
) -> None:
    response = await http.post("/v1/bookings", content=content, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert error_of(response)["code"] == "INVALID_ARGUMENT"
    assert fake_booking.requests == 0


async def test_wait_holds_until_terminal(http: httpx.AsyncClient, fake_booking: FakeBookingService) -> None:
    fake_booking.auto_complete = False
    created = await http.post(
        "/v1/bookings", json={**BODY, "payment_token": "tok_chargeDeclinedInsufficientFunds"}
    )
    booking_id = created.json()["booking_id"]
    await fake_booking.settled()
    # Not terminal yet: a short wait answers with the current state when time is up.
    pending = await http.get(f"/v1/bookings/{booking_id}", params={"wait": 0.2})
    assert pending.status_code == 200 and pending.json()["status"] == "BOOKING_STATUS_PENDING"

    waiting = asyncio.create_task(http.get(f"/v1/bookings/{booking_id}", params={"wait": 8}))
    await asyncio.sleep(0.1)
    assert not waiting.done()
    await fake_booking.complete(booking_id)
    response = await asyncio.wait_for(waiting, 5)
    assert response.status_code == 200
    assert response.json()["status"] == "BOOKING_STATUS_CANCELLED"
    assert response.json()["cancellation_reason"] == "insufficient_funds"


@pytest.mark.parametrize("wait", ["-1", "11", "soon"])
async def test_wait_out_of_range_is_400(http: httpx.AsyncClient, wait: str) -> None:
    created = await http.post("/v1/bookings", json=BODY)
    response = await http.get(f"/v1/bookings/{created.json()['booking_id']}", params={"wait": wait})
    assert response.status_code == 400 and error_of(response)["field"] == "wait"


async def test_not_found_in_the_error_shape(http: httpx.AsyncClient) -> None:
    for path in (
        "/v1/bookings/nope",
        "/v1/bookings/nope?wait=1",
        "/v1/bookings/nope/trace",
        "/v1/traces/nope",
    ):
        response = await http.get(path)
        assert response.status_code == 404, path
        assert error_of(response)["code"] == "NOT_FOUND"
    assert (await http.get("/v1/nothing-here")).status_code == 404


async def test_list_and_trace(http: httpx.AsyncClient, fake_booking: FakeBookingService) -> None:
    ids = []
    for i, token in enumerate(["tok_visa", "tok_chargeDeclined", "tok_visa"]):
        created = await http.post(
            "/v1/bookings", json={**BODY, "user_id": f"u{i % 2}", "payment_token": token}
        )
        ids.append(created.json()["booking_id"])
    for booking_id in ids:
        done = await http.get(f"/v1/bookings/{booking_id}", params={"wait": 5})
        assert done.json()["status"] in ("BOOKING_STATUS_CONFIRMED", "BOOKING_STATUS_CANCELLED")

    page = await http.get("/v1/bookings", params={"page_size": 2})
    body = ListBookingsJson.model_validate(page.json())
    assert [b.booking_id for b in body.bookings] == ids[::-1][:2] and body.next_page_token
    rest = await http.get("/v1/bookings", params={"page_size": 2, "page_token": body.next_page_token})
    assert [b["booking_id"] for b in rest.json()["bookings"]] == [ids[0]] and rest.json()[
        "next_page_token"
    ] == ""
    for status in ("BOOKING_STATUS_CONFIRMED", "confirmed", "2"):
        confirmed = await http.get("/v1/bookings", params={"status": status})
        assert {b["booking_id"] for b in confirmed.json()["bookings"]} == {ids[0], ids[2]}, status
    mine = await http.get("/v1/bookings", params={"user_id": "u1"})
    assert [b["booking_id"] for b in mine.json()["bookings"]] == [ids[1]]
    for params, field in (
        ({"status": "LOST"}, "status"),
        ({"page_size": 501}, "page_size"),
        ({"page_size": "many"}, "page_size"),
        ({"page_token": "zzz"}, "page_token"),
    ):
        bad = await http.get("/v1/bookings", params=params)
        assert bad.status_code == 400 and error_of(bad)["field"] == field, params

    trace = await http.get(f"/v1/bookings/{ids[1]}/trace")
    body_trace = WorkflowTraceJson.model_validate(trace.json())
    assert [e.event_type.rsplit(".", 1)[1] for e in body_trace.events] == [
        "BookingCreated",
        "PaymentFailed",
        "BookingCancelled",
    ]
    assert body_trace.events[1].stream == "PAYMENT" and body_trace.events[1].stream_sequence.isdigit()
    by_correlation = await http.get(f"/v1/traces/{body_trace.correlation_id}")
    assert by_correlation.json() == trace.json()


async def test_health_readiness_and_openapi(http: httpx.AsyncClient) -> None:
    live = await http.get("/healthz")
    assert live.status_code == 200 and HealthJson.model_validate(live.json()).status == "ok"
    ready = await http.get("/readyz")
    assert ready.status_code == 200 and ready.json() == {"status": "ok", "failures": {}}
    spec = (await http.get("/openapi.json")).json()
    assert {
        "/v1/bookings",
        "/v1/bookings/{booking_id}",
        "/v1/bookings/{booking_id}/trace",
        "/v1/traces/{correlation_id}",
        "/healthz",
        "/readyz",
    } <= set(spec["paths"])
    create = spec["paths"]["/v1/bookings"]["post"]
    assert "201" in create["responses"] and "503" in create["responses"]
    assert create["responses"]["201"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/BookingJson"
    )
    params = {p["name"] for p in create["parameters"]}
    assert {"idempotency-key", "x-correlation-id"} <= params
    # The links from a created booking name real operations (FastAPI derives their ids).
    operations = {op["operationId"]: op for path in spec["paths"].values() for op in path.values()}
    links = create["responses"]["201"]["links"]
    assert set(links) == {"GetBooking", "GetBookingTrace", "GetWorkflowTrace", "CancelBooking"}
    for link in links.values():
        [parameter] = link["parameters"]
        assert parameter in {p["name"] for p in operations[link["operationId"]]["parameters"]}
    for path in spec["paths"].values():
        for operation in path.values():
            assert "422" not in operation["responses"]  # invalid input is documented as it is: 400
    assert spec["paths"]["/v1/bookings"]["get"]["responses"]["400"]["content"]["application/json"]["schema"][
        "$ref"
    ].endswith("/ErrorJson")
    booking_schema = spec["components"]["schemas"]["BookingJson"]
    assert "BOOKING_STATUS_CONFIRMED" in booking_schema["properties"]["status"]["enum"]


async def test_metrics_time_the_command_and_the_read_model(
    http: httpx.AsyncClient, fake_booking: FakeBookingService
) -> None:
    created = await http.post("/v1/bookings", json=BODY)
    assert created.status_code == 201
    response = await http.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    stages = parse(response.text)["gateway"]
    assert stages["command_request"][1] >= 1 and stages["command_request"][0] > 0
    assert stages["projection_transaction"][1] >= 1
