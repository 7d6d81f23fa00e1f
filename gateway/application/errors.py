"""How a call fails: ``GatewayError`` with its ``ErrorCode``, and the unexpected failures.

Expected failures are ``GatewayError``: the API layers map the code to a gRPC status or
an HTTP status and the JSON error body. For unexpected ones the client gets a generic
message and an error id, the log the details. No exception text, SQL or stack trace
reaches a client: they can carry table names, queries, file paths and other users'
data. The error id ties the client's report to the one log line (with the traceback)
that explains it.
"""

from __future__ import annotations

import logging
import secrets
from enum import StrEnum

from choreo.validation import check_id as validate_id

log = logging.getLogger(__name__)


class ErrorCode(StrEnum):
    """Why a call failed; named after the gRPC status codes they map to."""

    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    NOT_FOUND = "NOT_FOUND"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    #: The target is not in a state the call applies to (HTTP 409), e.g. already CANCELLED.
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    UNAVAILABLE = "UNAVAILABLE"
    INTERNAL = "INTERNAL"
    #: No valid bearer token (HTTP 401 with ``WWW-Authenticate: Bearer``).
    UNAUTHENTICATED = "UNAUTHENTICATED"
    #: The caller may not do this (HTTP 403).
    PERMISSION_DENIED = "PERMISSION_DENIED"
    #: A limit of the caller or of the gateway is reached (HTTP 429 with ``Retry-After``).
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"


class GatewayError(Exception):
    """A failed call, with what the client needs to fix or retry it.

    Attributes:
        code: The kind of failure.
        message: Human-readable explanation.
        field: The offending request field, when there is one.
        retry_after: Seconds after which a retry may succeed (``Retry-After``), if known.
    """

    def __init__(
        self, code: ErrorCode, message: str, field: str = "", *, retry_after: float | None = None
    ) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.code = code
        self.message = message
        self.field = field
        self.retry_after = retry_after


def check_id(field: str, value: str) -> None:
    """Raises INVALID_ARGUMENT unless ``value`` is a plausible identifier (``choreo.validation``)."""
    invalid = validate_id(field, value)
    if invalid is not None:
        raise GatewayError(ErrorCode.INVALID_ARGUMENT, invalid.message, field)


#: What a client is told about an unexpected failure (with the error id).
GENERIC_MESSAGE = "internal error; the gateway's log has the details under this error id"


def report_unexpected(where: str) -> str:
    """Logs the exception being handled, with its traceback, under a new error id; returns the id.

    Call it from an ``except`` block. ``where`` names the call (``/choreo.gateway.v1...``,
    ``GET /v1/bookings``).
    """
    error_id = secrets.token_hex(8)
    log.error(
        "unexpected error in %s (error id %s)", where, error_id, exc_info=True, extra={"error_id": error_id}
    )
    return error_id


def report_internal(where: str, detail: str) -> str:
    """Logs an INTERNAL error the gateway raised itself (``detail`` stays in the log); returns the id."""
    error_id = secrets.token_hex(8)
    log.error("internal error in %s: %s (error id %s)", where, detail, error_id, extra={"error_id": error_id})
    return error_id
