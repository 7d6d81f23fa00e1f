"""Unexpected failures: the client gets a generic message and an error id, the log the details.

No exception text, SQL or stack trace reaches a client: they can carry table
names, queries, file paths and other users' data. The error id ties the
client's report to the one log line (with the traceback) that explains it.
"""

from __future__ import annotations

import logging
import secrets

log = logging.getLogger(__name__)

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
