"""Pydantic models of the HTTP API: the request body, and the responses for OpenAPI.

Responses are the protobuf JSON mapping of the gRPC messages (field names as
in the .proto, every field printed, int64 and uint64 as decimal strings,
enums by name, timestamps in RFC 3339), produced by ``json_format`` from the
messages themselves; these models document that shape in ``/openapi.json``
(the tests check real responses against them).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1
_INTEGER_TEXT = re.compile(r"-?[0-9]{1,19}")


def _int64(value: Any) -> int:
    """An int64 as the protobuf JSON mapping accepts it: a JSON number or a decimal string."""
    if isinstance(value, bool):
        raise ValueError("must be an integer, not a boolean")
    integral_float = isinstance(value, float) and value.is_integer()
    if integral_float or (isinstance(value, str) and _INTEGER_TEXT.fullmatch(value)):
        value = int(value)
    if not isinstance(value, int):
        raise ValueError("must be an integer (a JSON number or a decimal string)")
    if not INT64_MIN <= value <= INT64_MAX:
        raise ValueError("is outside the int64 range")
    return value


Int64 = Annotated[
    int,
    BeforeValidator(_int64),
    WithJsonSchema({"anyOf": [{"type": "integer"}, {"type": "string", "pattern": "^-?[0-9]+$"}]}),
]


def _unicode(value: str) -> str:
    """A string protobuf can carry: JSON may escape a lone surrogate (``"\\ud800"``), UTF-8 cannot."""
    try:
        value.encode()
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode (it holds a lone surrogate)") from None
    return value


#: A request string: any JSON string that is valid Unicode.
Text = Annotated[str, AfterValidator(_unicode)]

BookingStatusName = Literal[
    "BOOKING_STATUS_UNSPECIFIED",
    "BOOKING_STATUS_PENDING",
    "BOOKING_STATUS_CONFIRMED",
    "BOOKING_STATUS_CANCELLED",
]


class CreateBookingBody(BaseModel):
    """``POST /v1/bookings``: the fields of ``CreateBookingRequest``."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)

    user_id: Text = Field(
        default="",
        description="Whose booking. With GATEWAY_AUTH=jwt: empty (the caller's, the token's sub) "
        "or the caller's; another user's needs the bookings:admin scope.",
    )
    amount_cents: Int64 = Field(default=0, description="Price in minor units of the currency (cents).")
    currency: Text = Field(default="", description="ISO 4217 code, upper case, e.g. USD.")
    payment_token: Text = Field(default="", description="tok_visa, tok_chargeDeclined, ...")
    idempotency_key: Text = Field(
        default="",
        description="A retry with the same key returns the same booking (or use the Idempotency-Key header).",
    )
    email: Text = Field(
        default="",
        description="Optional: where the emails about this booking go (received, then its outcome). "
        "A plain address like name@example.com; a malformed one is a 400 naming `email`.",
    )
    resource_id: Text = Field(
        default="",
        description="Optional: the resource to reserve before payment (1 to 64 characters of "
        "A-Z a-z 0-9 . _ : -). Empty: no reservation, the payment is attempted at once.",
    )
    quantity: int = Field(
        default=0,
        strict=True,
        ge=INT32_MIN,
        le=INT32_MAX,
        description="Units of resource_id to reserve, 0 to 1000; 0 means 1. Only with resource_id.",
    )


class BookingJson(BaseModel):
    """A ``choreo.gateway.v1.Booking``."""

    booking_id: str
    user_id: str
    amount_cents: str = Field(description="int64 minor units, as a decimal string (protobuf JSON mapping).")
    currency: str
    status: BookingStatusName
    correlation_id: str
    payment_id: str
    cancellation_reason: str
    created_at: str | None = Field(default=None, description="RFC 3339.")
    updated_at: str | None = Field(default=None, description="RFC 3339.")
    resource_id: str = Field(description="The reserved resource; empty for a booking without inventory.")
    quantity: int = Field(description="Units of resource_id it holds (1 or more with a resource, else 0).")


class ListBookingsJson(BaseModel):
    """A ``choreo.gateway.v1.ListBookingsResponse``."""

    bookings: list[BookingJson]
    next_page_token: str = Field(description="Empty when there are no more pages.")


class TraceEventJson(BaseModel):
    """A ``choreo.gateway.v1.TraceEvent``."""

    event_id: str
    event_type: str
    source: str
    subject: str
    stream: str
    stream_sequence: str = Field(description="uint64, as a decimal string (protobuf JSON mapping).")
    causation_id: str
    occurred_at: str | None = Field(default=None, description="RFC 3339.")


class WorkflowTraceJson(BaseModel):
    """A ``choreo.gateway.v1.GetWorkflowTraceResponse``: a page of the facts, in causal order."""

    correlation_id: str
    events: list[TraceEventJson]
    next_page_token: str = Field(description="Empty when there are no more pages.")


class BookingStatsJson(BaseModel):
    """A ``choreo.gateway.v1.GetBookingStatsResponse``: the bookings created in the window."""

    bookings_created: str = Field(description="int64, as a decimal string (protobuf JSON mapping).")
    bookings_confirmed: str = Field(description="int64, as a decimal string.")
    bookings_cancelled: str = Field(description="int64, as a decimal string.")
    cancellation_reasons: dict[str, str] = Field(
        description="Cancelled bookings by reason (card_declined, ...); counts as decimal strings."
    )
    confirmed_amount_cents_by_currency: dict[str, str] = Field(
        description="Sum of the confirmed amounts in minor units by ISO 4217 currency, as decimal strings."
    )
    settle_p50_ms: float = Field(description="Created to confirmed or cancelled, milliseconds; 0: none.")
    settle_p95_ms: float
    settle_p99_ms: float
    since: str | None = Field(default=None, description="RFC 3339; absent: from the first booking.")
    until: str | None = Field(default=None, description="RFC 3339; the answer's time when not asked.")


class ErrorDetail(BaseModel):
    code: str = Field(
        description="gRPC status name: INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS, FAILED_PRECONDITION, "
        "UNAVAILABLE, "
        "UNAUTHENTICATED, PERMISSION_DENIED, RESOURCE_EXHAUSTED, ..."
    )
    message: str
    field: str = Field(default="", description="The offending request field, when there is one.")


class ErrorJson(BaseModel):
    """Every error response."""

    error: ErrorDetail


class HealthJson(BaseModel):
    """``/healthz`` and ``/readyz``."""

    status: Literal["ok", "unavailable"]
    failures: dict[str, str] = Field(default_factory=dict)
