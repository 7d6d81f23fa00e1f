"""The gRPC API: ``choreo.gateway.v1.BookingGatewayService``, health checking and reflection.

The servicer only translates between messages and ``GatewayCore`` calls.
Health reports SERVING only while the gateway is ready (see ``readiness``), so
a Kubernetes gRPC probe on this port means what it says.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
from google.protobuf.duration_pb2 import Duration
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection as grpc_reflection

from choreo.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from gateway.api.auth import Authenticator, grpc_caller
from gateway.api.convert import booking_message, status_from_proto, trace_message
from gateway.api.grpc_auth import AuthInterceptor
from gateway.api.grpc_errors import ERROR_ID_METADATA
from gateway.application.core import GatewayCore
from gateway.application.errors import GENERIC_MESSAGE, ErrorCode, GatewayError, report_internal
from gateway.application.readiness import Readiness
from gateway.application.stats import StatsQueries

log = logging.getLogger(__name__)

SERVICE_NAME: str = gateway_pb2.DESCRIPTOR.services_by_name["BookingGatewayService"].full_name
#: Metadata key a client may set to choose the workflow's correlation id.
CORRELATION_METADATA = "x-correlation-id"
#: Trailing metadata naming the invalid field of an INVALID_ARGUMENT.
FIELD_METADATA = "error-field"
#: Trailing metadata of a RESOURCE_EXHAUSTED: whole seconds to wait before retrying.
RETRY_AFTER_METADATA = "retry-after"

_STATUS = {
    ErrorCode.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorCode.ALREADY_EXISTS: grpc.StatusCode.ALREADY_EXISTS,
    ErrorCode.FAILED_PRECONDITION: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorCode.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    ErrorCode.INTERNAL: grpc.StatusCode.INTERNAL,
    ErrorCode.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
    ErrorCode.PERMISSION_DENIED: grpc.StatusCode.PERMISSION_DENIED,
    ErrorCode.RESOURCE_EXHAUSTED: grpc.StatusCode.RESOURCE_EXHAUSTED,
}

Context = grpc.aio.ServicerContext[Any, Any]


async def _abort(context: Context, error: GatewayError) -> None:
    if error.code is ErrorCode.INTERNAL:  # the detail goes to the log, the client gets an error id
        error_id = report_internal("the gRPC API", str(error))
        context.set_trailing_metadata(((ERROR_ID_METADATA, error_id),))
        await context.abort(grpc.StatusCode.INTERNAL, f"{GENERIC_MESSAGE}: {error_id}")
    trailing: list[tuple[str, str]] = []
    if error.field:
        trailing.append((FIELD_METADATA, error.field))
    if error.retry_after is not None:
        trailing.append((RETRY_AFTER_METADATA, str(max(1, math.ceil(error.retry_after)))))
    if trailing:
        context.set_trailing_metadata(tuple(trailing))
    details = f"{error.field}: {error.message}" if error.field else error.message
    await context.abort(_STATUS[error.code], details)


def _metadata(context: Context, key: str) -> str:
    for item in context.invocation_metadata() or ():
        if item[0] == key:
            return str(item[1])
    return ""


#: Kept from the call's deadline to send the answer.
_ANSWER_SECONDS = 0.05


def _time_left(context: Context) -> float | None:
    """Seconds the client still waits, minus the time to answer; ``None`` without a deadline."""
    left = context.time_remaining()
    # Without a deadline gRPC reports a practically infinite time.
    return None if left is None or left > 1e6 else max(0.0, left - _ANSWER_SECONDS)


def _seconds(duration: Duration) -> float:
    return duration.seconds + duration.nanos / 1e9


class BookingGatewayServicer(gateway_pb2_grpc.BookingGatewayServiceServicer):
    """Implements ``BookingGatewayService`` on top of ``GatewayCore`` (and ``StatsQueries``)."""

    def __init__(self, core: GatewayCore, stats: StatsQueries) -> None:
        self._core = core
        self._stats = stats

    async def CreateBooking(
        self, request: gateway_pb2.CreateBookingRequest, context: Context
    ) -> gateway_pb2.CreateBookingResponse:
        try:
            created = await self._core.create(
                request,
                caller=grpc_caller(),
                correlation_id=_metadata(context, CORRELATION_METADATA),
                timeout=_time_left(context),
            )
        except GatewayError as exc:
            await _abort(context, exc)
            raise  # unreachable: abort raises
        if created.replayed:
            await context.send_initial_metadata((("idempotent-replayed", "true"),))
        return gateway_pb2.CreateBookingResponse(booking=booking_message(created.booking))

    async def CancelBooking(
        self, request: gateway_pb2.CancelBookingRequest, context: Context
    ) -> gateway_pb2.CancelBookingResponse:
        """Cancels a PENDING or CONFIRMED booking (``GatewayCore.cancel``): NOT_FOUND for an
        unknown booking or another user's, FAILED_PRECONDITION for a CANCELLED one."""
        try:
            view = await self._core.cancel(
                request.booking_id, caller=grpc_caller(), timeout=_time_left(context)
            )
        except GatewayError as exc:
            await _abort(context, exc)
            raise  # unreachable: abort raises
        return gateway_pb2.CancelBookingResponse(booking=booking_message(view))

    async def GetBooking(
        self, request: gateway_pb2.GetBookingRequest, context: Context
    ) -> gateway_pb2.GetBookingResponse:
        """The booking; with ``wait``, once it is CONFIRMED or CANCELLED (a CONFIRMED one may
        still be cancelled by its user later) or when the wait is over."""
        try:
            if request.HasField("wait"):
                view = await self._core.wait(request.booking_id, _seconds(request.wait), caller=grpc_caller())
            else:
                view = await self._core.get(request.booking_id, caller=grpc_caller())
        except GatewayError as exc:
            await _abort(context, exc)
            raise
        return gateway_pb2.GetBookingResponse(booking=booking_message(view))

    async def ListBookings(
        self, request: gateway_pb2.ListBookingsRequest, context: Context
    ) -> gateway_pb2.ListBookingsResponse:
        try:
            try:
                status = status_from_proto(request.status)
            except ValueError as exc:
                raise GatewayError(ErrorCode.INVALID_ARGUMENT, str(exc), "status") from None
            views, token = await self._core.list_bookings(
                caller=grpc_caller(),
                user_id=request.user_id,
                status=status,
                page_size=request.page_size,
                page_token=request.page_token,
            )
        except GatewayError as exc:
            await _abort(context, exc)
            raise
        return gateway_pb2.ListBookingsResponse(
            bookings=[booking_message(v) for v in views], next_page_token=token
        )

    async def WatchBooking(
        self, request: gateway_pb2.WatchBookingRequest, context: Context
    ) -> AsyncIterator[gateway_pb2.WatchBookingResponse]:
        """The booking now, then each change; the stream ends once it is CONFIRMED or CANCELLED.

        A CONFIRMED booking may still be cancelled by its user later (CancelBooking); the
        stream does not stay open for that (see ``GatewayCore.watch``).
        """
        try:
            watch = self._core.watch(request.booking_id, caller=grpc_caller())
            # aclosing: a cancelled watch leaves its slot at once, not when the generator is collected.
            async with contextlib.aclosing(watch) as views:
                async for view in views:
                    yield gateway_pb2.WatchBookingResponse(booking=booking_message(view))
        except GatewayError as exc:
            await _abort(context, exc)

    async def GetWorkflowTrace(
        self, request: gateway_pb2.GetWorkflowTraceRequest, context: Context
    ) -> gateway_pb2.GetWorkflowTraceResponse:
        try:
            page = await self._core.trace(
                caller=grpc_caller(),
                booking_id=request.booking_id,
                correlation_id=request.correlation_id,
                page_size=request.page_size,
                page_token=request.page_token,
            )
        except GatewayError as exc:
            await _abort(context, exc)
            raise
        return gateway_pb2.GetWorkflowTraceResponse(
            correlation_id=page.correlation_id,
            events=[trace_message(e) for e in page.events],
            next_page_token=page.next_page_token,
        )

    async def GetBookingStats(
        self, request: gateway_pb2.GetBookingStatsRequest, context: Context
    ) -> gateway_pb2.GetBookingStatsResponse:
        try:
            return await self._stats.booking_stats(
                caller=grpc_caller(),
                since=request.since if request.HasField("since") else None,
                until=request.until if request.HasField("until") else None,
                timeout=_time_left(context),
            )
        except GatewayError as exc:
            await _abort(context, exc)
            raise


class GrpcServer:
    """The gRPC server as a service component: serves until ``stop``, then drains.

    The port is bound on construction, so a bad port fails the start-up and
    ``port`` is known at once (0 picks a free one).

    Args:
        core: Application logic.
        readiness: Drives the health status.
        stats: Booking statistics (from the analytics service).
        authenticator: Identifies the caller of each call (``gateway.api.grpc_auth``).
        host: Address to bind.
        port: Port to bind.
        grace: Seconds in-flight calls get on shutdown.
        health_interval: Seconds between readiness evaluations.
        interceptors: Server interceptors, outermost first; authentication comes after them.
        options: Channel arguments (limits, keepalive; ``gateway.api.server_limits``).
        maximum_concurrent_rpcs: Calls in progress before new ones are RESOURCE_EXHAUSTED.
        credentials: TLS credentials (``gateway.api.tls``); ``None`` serves plaintext.
        reflection: Serve gRPC server reflection.
    """

    def __init__(
        self,
        core: GatewayCore,
        readiness: Readiness,
        *,
        stats: StatsQueries,
        authenticator: Authenticator,
        host: str,
        port: int,
        grace: float,
        health_interval: float = 1.0,
        interceptors: Sequence[grpc.aio.ServerInterceptor] = (),  # type: ignore[type-arg]
        options: Sequence[tuple[str, Any]] = (),
        maximum_concurrent_rpcs: int | None = None,
        credentials: grpc.ServerCredentials | None = None,
        reflection: bool = True,
    ) -> None:
        self._core = core
        self._readiness = readiness
        self._grace = grace
        self._health_interval = health_interval
        self._stopping = asyncio.Event()
        # No SO_REUSEPORT: a second process on the same port must fail, not share the traffic.
        self.server = grpc.aio.server(
            interceptors=[*interceptors, AuthInterceptor(authenticator)],
            options=[("grpc.so_reuseport", 0), *options],
            maximum_concurrent_rpcs=maximum_concurrent_rpcs,
        )
        gateway_pb2_grpc.add_BookingGatewayServiceServicer_to_server(
            BookingGatewayServicer(core, stats), self.server
        )
        self.health = health.aio.HealthServicer()  # type: ignore[attr-defined]
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        if reflection:
            grpc_reflection.enable_server_reflection(
                (SERVICE_NAME, health.SERVICE_NAME, grpc_reflection.SERVICE_NAME), self.server
            )
        address = f"{_bracket(host)}:{port}"
        self.port: int = (
            self.server.add_secure_port(address, credentials)
            if credentials is not None
            else self.server.add_insecure_port(address)
        )
        if not self.port:
            raise OSError(f"cannot bind gRPC to {host}:{port}")

    async def run(self) -> None:
        # The aio servicer starts SERVING; nothing is served before readiness says so.
        await self._set_health(False)
        await self.server.start()
        log.info("gRPC on port %d", self.port)
        reporter = asyncio.create_task(self._report_health())
        try:
            await self._stopping.wait()
        finally:
            reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reporter
            await self.health.enter_graceful_shutdown()
            await self.server.stop(self._grace)
            log.info("gRPC stopped")

    def stop(self) -> None:
        """Stops taking calls; in-flight calls get the grace period, watches end now."""
        self._core.shut_down()
        self._stopping.set()

    async def _report_health(self) -> None:
        ready = False
        caught_up = asyncio.create_task(self._readiness.wait_caught_up())
        try:
            while True:
                failures = await self._readiness.failures()
                if (not failures) != ready:
                    ready = not failures
                    await self._set_health(ready)
                    if ready:
                        log.info("gateway ready")
                    else:
                        log.warning(
                            "gateway not ready: %s", "; ".join(f"{k}: {v}" for k, v in failures.items())
                        )
                # Re-evaluate periodically, and at once when the initial replay completes.
                if caught_up.done():
                    await asyncio.sleep(self._health_interval)
                else:
                    await asyncio.wait({caught_up}, timeout=self._health_interval)
        finally:
            caught_up.cancel()

    async def _set_health(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", SERVICE_NAME):
            await self.health.set(name, status)


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
