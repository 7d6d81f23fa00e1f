"""The HTTP API (FastAPI): the same operations as the gRPC API, as JSON.

Handlers only translate between HTTP and ``GatewayCore``; bodies are the
protobuf JSON mapping of the gRPC messages. Errors are always
``{"error": {"code", "message", "field"}}`` with the HTTP status of the gRPC
code (400, 401, 403, 404, 409, 429, 503, 500; a 500 adds ``error_id``, see ``gateway.application.errors``),
also for unknown routes (404), methods (405) and bodies over the limit (413).
The server runs in the gateway's event loop, next to the gRPC server, under uvicorn.
"""

from __future__ import annotations

import logging
import math
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from google.protobuf import json_format
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Match

from choreo.gateway.v1 import gateway_pb2
from choreo.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from choreo.metrics import Stages
from gateway.api.auth import AuthenticationFailed, Authenticator, http_caller
from gateway.api.convert import booking_message, status_from_name, timestamp_from_rfc3339, trace_message
from gateway.api.http_disconnect import CLIENT_CLOSED_REQUEST, unless_client_leaves
from gateway.api.http_errors import CatchAll, error_json
from gateway.api.http_limits import BodyLimit
from gateway.api.http_models import (
    BookingJson,
    BookingStatsJson,
    CreateBookingBody,
    ErrorJson,
    HealthJson,
    ListBookingsJson,
    WorkflowTraceJson,
)
from gateway.api.http_openapi import document_errors_as_400
from gateway.application.core import DEFAULT_TRACE_PAGE_SIZE, MAX_TRACE_PAGE_SIZE, GatewayCore, TracePage
from gateway.application.errors import GENERIC_MESSAGE, ErrorCode, GatewayError, report_internal
from gateway.application.principal import Principal
from gateway.application.readiness import Readiness
from gateway.application.stats import StatsQueries, check_may_read_stats

log = logging.getLogger(__name__)

HTTP_STATUS = {
    ErrorCode.INVALID_ARGUMENT: 400,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.ALREADY_EXISTS: 409,
    ErrorCode.FAILED_PRECONDITION: 409,
    ErrorCode.UNAVAILABLE: 503,
    ErrorCode.INTERNAL: 500,
    ErrorCode.UNAUTHENTICATED: 401,
    ErrorCode.PERMISSION_DENIED: 403,
    ErrorCode.RESOURCE_EXHAUSTED: 429,
}
_BAD_REQUEST: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorJson, "description": "Invalid request; `field` names the culprit."},
}
#: Every ``/v1`` operation may answer these (authentication, authorization, limits).
_CALLER_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {
        "model": ErrorJson,
        "description": "No valid bearer token (GATEWAY_AUTH=jwt); see `WWW-Authenticate`.",
    },
    403: {"model": ErrorJson, "description": "The caller may not do this; `field` says what."},
    429: {"model": ErrorJson, "description": "A limit of the caller or the gateway; see `Retry-After`."},
}
_BAD_REQUEST = {**_BAD_REQUEST, **_CALLER_ERRORS}
_ERRORS: dict[int | str, dict[str, Any]] = {
    **_BAD_REQUEST,
    404: {"model": ErrorJson, "description": "Not found."},
}
_LOCATIONS = {"body", "query", "path", "header"}
#: OpenAPI links: what a client (or schemathesis' stateful phase) does next with a created booking.
_CREATED_LINKS: dict[str, Any] = {
    name: {"operationId": operation, "parameters": {parameter: f"$response.body#/{parameter}"}}
    for name, operation, parameter in (
        ("GetBooking", "get_booking_v1_bookings__booking_id__get", "booking_id"),
        ("GetBookingTrace", "booking_trace_v1_bookings__booking_id__trace_get", "booking_id"),
        ("GetWorkflowTrace", "workflow_trace_v1_traces__correlation_id__get", "correlation_id"),
        ("CancelBooking", "cancel_booking_v1_bookings__booking_id__cancel_post", "booking_id"),
    )
}
TracePageSize = Annotated[
    int, Query(description=f"Default {DEFAULT_TRACE_PAGE_SIZE}, at most {MAX_TRACE_PAGE_SIZE}.")
]


def to_json(message: Message) -> dict[str, Any]:
    """The protobuf JSON mapping of ``message``, with the .proto field names and every field."""
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def error_response(code: str, message: str, field: str = "", status: int = 400) -> JSONResponse:
    headers = {"Retry-After": "1"} if status == 503 else None
    return JSONResponse(error_json(code, message, field), status, headers=headers)


def _gateway_error(error: GatewayError) -> JSONResponse:
    response = error_response(error.code, error.message, error.field, HTTP_STATUS[error.code])
    if error.retry_after is not None:
        response.headers["Retry-After"] = str(max(1, math.ceil(error.retry_after)))
    if isinstance(error, AuthenticationFailed):
        response.headers["WWW-Authenticate"] = error.challenge
    return response


def create_app(
    core: GatewayCore,
    readiness: Readiness,
    stages: Stages | None = None,
    *,
    stats: StatsQueries,
    authenticator: Authenticator,
    docs: bool = True,
    max_body_bytes: int = 16 * 1024,
) -> FastAPI:
    """The FastAPI application of the gateway.

    ``stats`` answers ``/v1/stats`` (from the analytics service); ``authenticator``
    identifies the caller of ``/v1``; ``docs`` serves /docs and /redoc (/openapi.json always).
    """
    app = FastAPI(
        title="choreo gateway",
        version="1.0.0",
        description="Bookings: create them, read them, wait for their outcome, trace their workflow; "
        "booking statistics from the analytics service.",
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        # No 307 to the same path without its slash: its Location comes from the Host header.
        redirect_slashes=False,
    )
    # Outermost last: an exception anywhere inside is a 500 with an error id.
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    app.add_middleware(CatchAll)

    # A default, not an annotation: the dependency is this app's, and annotations are strings.
    identify = Depends(http_caller(authenticator))

    @app.exception_handler(GatewayError)
    async def on_gateway_error(request: Request, exc: GatewayError) -> JSONResponse:
        if exc.code is ErrorCode.INTERNAL:  # the detail goes to the log, the client gets an error id
            error_id = report_internal(f"{request.method} {request.url.path}", exc.message)
            return JSONResponse(error_json(exc.code, GENERIC_MESSAGE, error_id=error_id), 500)
        return _gateway_error(exc)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        names = [str(p) for p in first.get("loc", ()) if isinstance(p, str) and p not in _LOCATIONS]
        kind = first.get("type", "")
        if kind == "json_invalid":
            return error_response(ErrorCode.INVALID_ARGUMENT, "the body is not valid JSON")
        if kind == "missing" and not names:
            return error_response(ErrorCode.INVALID_ARGUMENT, "a JSON object body is required")
        message = str(first.get("msg", "is invalid"))
        if kind == "extra_forbidden":
            message = "is not a field of this request"
        return error_response(ErrorCode.INVALID_ARGUMENT, message, names[-1] if names else "")

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:  # FastAPI could not decode the body (bad UTF-8, a 5,000-digit number)
            return error_response(ErrorCode.INVALID_ARGUMENT, "the body is not valid JSON")
        code = {404: "NOT_FOUND", 405: "UNIMPLEMENTED"}.get(exc.status_code, "UNKNOWN")
        response = error_response(code, str(exc.detail), status=exc.status_code)
        if exc.status_code == 405:  # Starlette's Allow names the methods of the path's first route only
            methods = {
                m for r in app.routes if r.matches(request.scope)[0] is Match.PARTIAL for m in _methods(r)
            }
            response.headers["Allow"] = ", ".join(sorted(methods))
        return response

    @app.post(
        "/v1/bookings",
        status_code=201,
        response_model=BookingJson,
        responses={
            201: {"links": _CREATED_LINKS},
            **_BAD_REQUEST,
            409: {"model": ErrorJson, "description": "The idempotency key was used for another booking."},
            503: {
                "model": ErrorJson,
                "description": "The booking service is unavailable; retry with the same key.",
            },
        },
        summary="Create a booking (PENDING; payment follows asynchronously)",
    )
    async def create_booking(
        body: CreateBookingBody,
        idempotency_key: Annotated[
            str | None, Header(description="Same as the body's idempotency_key.")
        ] = None,
        x_correlation_id: Annotated[
            str | None, Header(description="Workflow id to use (default: new).")
        ] = None,
        caller: Principal = identify,
    ) -> Response:
        key = body.idempotency_key
        if idempotency_key:  # an empty header is no key
            if key and key != idempotency_key:
                raise GatewayError(
                    ErrorCode.INVALID_ARGUMENT,
                    "differs from the Idempotency-Key header; send one or make them equal",
                    "idempotency_key",
                )
            key = idempotency_key
        request = gateway_pb2.CreateBookingRequest(
            user_id=body.user_id,
            amount_cents=body.amount_cents,
            currency=body.currency,
            payment_token=body.payment_token,
            idempotency_key=key,
            email=body.email,
            resource_id=body.resource_id,
            quantity=body.quantity,
        )
        created = await core.create(request, caller=caller, correlation_id=x_correlation_id or "")
        booking_id = created.booking.booking_id
        headers = {"Location": f"/v1/bookings/{quote(booking_id, safe='')}"}
        if created.replayed:
            headers["Idempotent-Replayed"] = "true"
        return JSONResponse(to_json(booking_message(created.booking)), 201, headers=headers)

    @app.post(
        "/v1/bookings/{booking_id}:cancel",
        response_model=BookingJson,
        responses={
            **_ERRORS,
            404: {"model": ErrorJson, "description": "No such booking, or not the caller's."},
            409: {"model": ErrorJson, "description": "The booking is already CANCELLED."},
            503: {
                "model": ErrorJson,
                "description": (
                    "The booking service is unavailable; retry (a cancel that did commit answers 409)."
                ),
            },
        },
        summary="Cancel a PENDING or CONFIRMED booking (its payment is refunded, its units released)",
        description="The booking becomes CANCELLED with reason `cancelled_by_user`; the answer is the "
        "booking as GET /v1/bookings/{booking_id} shows it. A captured payment is refunded and a "
        "reservation released by the services that react to BookingCancelled (see the trace). Only "
        "the booking's user may cancel it (or a bookings:admin caller). No body.",
    )
    async def cancel_booking(booking_id: str, caller: Principal = identify) -> Response:
        view = await core.cancel(booking_id, caller=caller)
        return JSONResponse(to_json(booking_message(view)))

    @app.get(
        "/v1/bookings/{booking_id}",
        response_model=BookingJson,
        responses=_ERRORS,
        summary="Read a booking; with ?wait=SECONDS, hold until it is settled or the time passes",
        description="`?wait` answers once the booking is CONFIRMED or CANCELLED (or the time passed). "
        "A CONFIRMED booking may still be cancelled later by its user (POST .../{booking_id}:cancel).",
    )
    async def get_booking(
        request: Request,
        booking_id: str,
        wait: Annotated[float | None, Query(description="Seconds to wait for a terminal state.")] = None,
        caller: Principal = identify,
    ) -> Response:
        if wait is None:
            view = await core.get(booking_id, caller=caller)
        else:
            waited = await unless_client_leaves(request, core.wait(booking_id, wait, caller=caller))
            if waited is None:
                return Response(status_code=CLIENT_CLOSED_REQUEST)
            view = waited
        return JSONResponse(to_json(booking_message(view)))

    @app.get(
        "/v1/bookings",
        response_model=ListBookingsJson,
        responses=_BAD_REQUEST,
        summary="List bookings, newest first",
    )
    async def list_bookings(
        user_id: Annotated[
            str, Query(description="Whose bookings (default: the caller's; all for an admin).")
        ] = "",
        status: Annotated[str, Query(description="BOOKING_STATUS_CONFIRMED (or CONFIRMED), ...")] = "",
        page_size: Annotated[int, Query(description="Default 50, at most 500.")] = 0,
        page_token: str = "",
        caller: Principal = identify,
    ) -> Response:
        try:
            wanted = status_from_name(status)
        except ValueError as exc:
            raise GatewayError(ErrorCode.INVALID_ARGUMENT, str(exc), "status") from None
        views, token = await core.list_bookings(
            caller=caller, user_id=user_id, status=wanted, page_size=page_size, page_token=page_token
        )
        response = gateway_pb2.ListBookingsResponse(
            bookings=[booking_message(v) for v in views], next_page_token=token
        )
        return JSONResponse(to_json(response))

    @app.get(
        "/v1/bookings/{booking_id}/trace",
        response_model=WorkflowTraceJson,
        responses=_ERRORS,
        summary="The booking's workflow: every fact, in causal order",
    )
    async def booking_trace(
        booking_id: str, page_size: TracePageSize = 0, page_token: str = "", caller: Principal = identify
    ) -> Response:
        return _trace_response(
            await core.trace(caller=caller, booking_id=booking_id, page_size=page_size, page_token=page_token)
        )

    @app.get(
        "/v1/traces/{correlation_id}",
        response_model=WorkflowTraceJson,
        responses=_ERRORS,
        summary="A workflow by correlation id: every fact, in causal order",
    )
    async def workflow_trace(
        correlation_id: str, page_size: TracePageSize = 0, page_token: str = "", caller: Principal = identify
    ) -> Response:
        return _trace_response(
            await core.trace(
                caller=caller, correlation_id=correlation_id, page_size=page_size, page_token=page_token
            )
        )

    @app.get(
        "/v1/stats",
        response_model=BookingStatsJson,
        responses={
            **_BAD_REQUEST,
            503: {"model": ErrorJson, "description": "The analytics service is unavailable; retry later."},
        },
        summary="Booking statistics over the bookings created in a window (needs bookings:admin)",
    )
    async def booking_stats(
        since: Annotated[
            str, Query(description="RFC 3339, e.g. 2026-01-31T00:00:00Z: bookings created at or after it.")
        ] = "",
        until: Annotated[str, Query(description="RFC 3339: bookings created before it (default: now).")] = "",
        caller: Principal = identify,
    ) -> Response:
        check_may_read_stats(caller)  # before the parameters, as over gRPC
        answer = await stats.booking_stats(
            caller=caller, since=_time_parameter("since", since), until=_time_parameter("until", until)
        )
        return JSONResponse(to_json(answer))

    @app.get("/healthz", response_model=HealthJson, summary="Liveness: the process serves HTTP")
    async def healthz() -> Response:
        return JSONResponse({"status": "ok", "failures": {}})

    @app.get(
        "/readyz",
        response_model=HealthJson,
        responses={503: {"model": HealthJson, "description": "Not ready; `failures` says why."}},
        summary="Readiness: NATS connected, database answering, read model caught up",
    )
    async def readyz() -> Response:
        failures = await readiness.failures()
        return JSONResponse(
            {"status": "unavailable" if failures else "ok", "failures": failures}, 503 if failures else 200
        )

    if stages is not None:
        timings = stages

        @app.get(
            "/metrics",
            response_class=PlainTextResponse,
            summary="Time per stage, in Prometheus' text format (choreo.metrics)",
        )
        async def metrics() -> Response:
            return Response(timings.render(), media_type=METRICS_CONTENT_TYPE)

    document_errors_as_400(app)
    return app


def _methods(route: BaseRoute) -> set[str]:
    return set(getattr(route, "methods", None) or ())


def _time_parameter(name: str, text: str) -> Timestamp | None:
    """The RFC 3339 time of query parameter ``name`` (``None`` when absent or empty).

    Raises:
        GatewayError: INVALID_ARGUMENT naming the parameter.
    """
    try:
        return timestamp_from_rfc3339(text)
    except ValueError as exc:
        raise GatewayError(ErrorCode.INVALID_ARGUMENT, str(exc), name) from None


def _trace_response(page: TracePage) -> Response:
    response = gateway_pb2.GetWorkflowTraceResponse(
        correlation_id=page.correlation_id,
        events=[trace_message(e) for e in page.events],
        next_page_token=page.next_page_token,
    )
    return JSONResponse(to_json(response))
