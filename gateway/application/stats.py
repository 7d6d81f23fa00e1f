"""Booking statistics: asked of the analytics service over NATS request/reply (``nats_request``).

The gateway keeps no statistics: analytics consumes the facts into its own
database and answers ``BookingStatsQuery`` on the subject its contract names,
so it stays independent and replaceable. While no analytics replica answers
(none running, too slow, overloaded, NATS down) GetBookingStats is UNAVAILABLE
and nothing else in the gateway is affected: readiness does not depend on it.
Statistics cover every user's bookings, so only an admin may read them.
"""

from __future__ import annotations

import logging

from google.protobuf.message import DecodeError
from google.protobuf.timestamp_pb2 import Timestamp

from choreo.analytics.v1 import queries_pb2
from choreo.clock import is_valid_timestamp
from choreo.contract import command_options
from choreo.gateway.v1 import gateway_pb2
from choreo.ids import new_id
from choreo.logs import log_context
from gateway.application.errors import ErrorCode, GatewayError
from gateway.application.nats_request import NatsRequester, RequestFailed
from gateway.application.principal import ADMIN_SCOPE, Principal

log = logging.getLogger(__name__)

#: Where analytics answers the query: from the contract (``choreo.options.v1.command``).
STATS_SUBJECT = command_options(queries_pb2.BookingStatsQuery).subject
_SERVICE = "the analytics service"

_QUERY_ERRORS = {
    queries_pb2.QUERY_ERROR_CODE_INVALID_ARGUMENT: ErrorCode.INVALID_ARGUMENT,
    queries_pb2.QUERY_ERROR_CODE_UNAVAILABLE: ErrorCode.UNAVAILABLE,
}


def check_timestamp(field: str, value: Timestamp | None) -> None:
    """Raises INVALID_ARGUMENT naming ``field`` unless ``value`` is unset or a valid Timestamp."""
    if value is None:
        return
    if not is_valid_timestamp(value):
        raise GatewayError(
            ErrorCode.INVALID_ARGUMENT,
            "must be a time between 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z",
            field,
        )


def check_may_read_stats(caller: Principal) -> None:
    """Raises PERMISSION_DENIED unless ``caller`` may read statistics (every user's bookings).

    Checked before anything of the request is read, so an outsider learns nothing from it.
    """
    if not caller.is_admin:
        raise GatewayError(ErrorCode.PERMISSION_DENIED, f"booking statistics need the {ADMIN_SCOPE} scope")


class StatsQueries:
    """Client of the analytics service's ``BookingStatsQuery``.

    Args:
        requester: Sends the queries.
        timeout: Seconds to wait for analytics' answer.
    """

    def __init__(self, requester: NatsRequester, timeout: float) -> None:
        self._requester = requester
        self._timeout = timeout

    async def booking_stats(
        self,
        *,
        caller: Principal,
        since: Timestamp | None = None,
        until: Timestamp | None = None,
        timeout: float | None = None,
    ) -> gateway_pb2.GetBookingStatsResponse:
        """The statistics of the bookings created in ``[since, until)`` (unset: unbounded).

        Args:
            caller: Who asks; must be an admin.
            since: Start of the window, if any.
            until: End of the window, if any.
            timeout: Seconds the client still waits (its call's deadline), if it said.

        Raises:
            GatewayError: PERMISSION_DENIED (not an admin), INVALID_ARGUMENT (naming ``since``
                or ``until``), UNAVAILABLE (analytics did not answer; retry), INTERNAL.
        """
        check_may_read_stats(caller)
        check_timestamp("since", since)
        check_timestamp("until", until)
        if since is not None and until is not None and until.ToNanoseconds() < since.ToNanoseconds():
            raise GatewayError(ErrorCode.INVALID_ARGUMENT, "must not be before since", "until")
        query = queries_pb2.BookingStatsQuery(since=since, until=until)
        query_id = new_id()
        with log_context(correlation_id=query_id):
            try:
                data = await self._requester.request(
                    STATS_SUBJECT,
                    query,
                    service=_SERVICE,
                    request_id=query_id,
                    correlation_id=query_id,
                    timeout=self._timeout,
                    time_left=timeout,
                    stage="query_request",
                )
            except RequestFailed as exc:
                log.warning("booking statistics unavailable: %s", exc)
                raise GatewayError(
                    ErrorCode.UNAVAILABLE, f"analytics is unavailable: {exc}; retry later"
                ) from None
            return _answer(data)


def _answer(data: bytes) -> gateway_pb2.GetBookingStatsResponse:
    """The response of analytics' reply, or the error it stands for."""
    reply = queries_pb2.BookingStatsReply()
    try:
        reply.ParseFromString(data)
    except DecodeError as exc:
        raise GatewayError(
            ErrorCode.INTERNAL, f"unreadable reply from the analytics service: {exc}"
        ) from None
    result = reply.WhichOneof("result")
    if result == "error":
        error = reply.error
        code = _QUERY_ERRORS.get(error.code, ErrorCode.INTERNAL)
        log.info("analytics refused the query: %s %s", error.field, error.message)
        message = error.message.removeprefix(f"{error.field}: ") if error.field else error.message
        if code is ErrorCode.UNAVAILABLE:
            message = f"analytics is unavailable: {message or 'it cannot answer now'}; retry later"
        raise GatewayError(code, message or "the analytics service refused the query", error.field)
    if result != "stats":
        raise GatewayError(ErrorCode.INTERNAL, "the analytics service sent an empty reply")
    stats = reply.stats
    response = gateway_pb2.GetBookingStatsResponse(
        bookings_created=stats.bookings_created,
        bookings_confirmed=stats.bookings_confirmed,
        bookings_cancelled=stats.bookings_cancelled,
        cancellation_reasons=dict(stats.cancellation_reasons),
        confirmed_amount_cents_by_currency=dict(stats.confirmed_amount_cents_by_currency),
        settle_p50_ms=stats.settle_p50_ms,
        settle_p95_ms=stats.settle_p95_ms,
        settle_p99_ms=stats.settle_p99_ms,
    )
    if stats.HasField("since"):
        response.since.CopyFrom(stats.since)
    if stats.HasField("until"):
        response.until.CopyFrom(stats.until)
    return response
