"""The gRPC floor: what one unary call costs, with no work behind it.

The raw ceiling leaves gRPC out (it is NATS hops only), yet every booking
costs two gRPC calls (CreateBooking, then GetBooking with ``wait``). This
phase measures ``grpc.aio`` alone on the same machine: a server process whose
GetBooking returns a fixed booking at once, called by a closed loop from the
benchmark's process over the same channels the booking clients use. CPU per
call on each side says how much of the system's CPU per booking the API
itself takes, before any of the gateway's own work.

Run as ``python -m choreoctl.bench.grpc_floor PORT`` it is that server.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sys
import time
from typing import Any

import grpc

from choreo.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from choreoctl.bench.driver import run_count
from choreoctl.bench.procstats import read_sample
from choreoctl.stack.ports import free_port

_BOOKING = gateway_pb2.Booking(
    booking_id="0193f2a4-7c1e-7d3a-9b6f-2f0c4e8a1b2d",
    user_id="bench",
    amount_cents=4200,
    currency="EUR",
    status=gateway_pb2.BOOKING_STATUS_CONFIRMED,
)


async def _get_booking(
    request: gateway_pb2.GetBookingRequest, context: Any
) -> gateway_pb2.GetBookingResponse:
    return gateway_pb2.GetBookingResponse(booking=_BOOKING)


async def serve(port: int) -> None:
    server = grpc.aio.server()
    # Only GetBooking, registered the way the generated code registers the whole service.
    method = grpc.unary_unary_rpc_method_handler(
        _get_booking,
        request_deserializer=gateway_pb2.GetBookingRequest.FromString,
        response_serializer=gateway_pb2.GetBookingResponse.SerializeToString,
    )
    service = gateway_pb2.DESCRIPTOR.services_by_name["BookingGatewayService"].full_name
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, {"GetBooking": method}),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print("ready", flush=True)
    await server.wait_for_termination()


async def run_grpc_floor(calls: int = 20_000, concurrency: int = 64, channels: int = 4) -> dict[str, Any]:
    """Starts the server, makes ``calls`` GetBooking calls, returns rate and CPU per call.

    Returns:
        ``calls``, ``calls_per_s``, and CPU microseconds per call of the
        ``server`` and of the ``client`` (this process).
    """
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", __name__, str(port), stdout=asyncio.subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(30):
            while (await process.stdout.readline()).strip() != b"ready":
                pass
        options = [("grpc.use_local_subchannel_pool", 1)]  # as the booking clients: one connection each
        opened = [grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) for _ in range(channels)]
        stubs: list[Any] = [gateway_pb2_grpc.BookingGatewayServiceStub(c) for c in opened]
        request = gateway_pb2.GetBookingRequest(booking_id=_BOOKING.booking_id)
        for stub in stubs:  # connect before measuring
            await stub.GetBooking(request, timeout=10)
        next_stub = itertools.cycle(stubs)

        async def call() -> str:
            await next(next_stub).GetBooking(request, timeout=10)
            return "ok"

        server_before = read_sample(process.pid)
        cpu_before = time.process_time()
        result = await run_count(call, calls, concurrency)
        client_cpu = time.process_time() - cpu_before
        server_after = read_sample(process.pid)
        if result.errors:
            raise RuntimeError(f"{result.errors} of {calls} calls failed: {result.error_samples[:1]}")
        for channel in opened:
            await channel.close(None)
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
    server_cpu = server_after.cpu_s - server_before.cpu_s if server_before and server_after else None
    return {
        "calls": calls,
        "concurrency": concurrency,
        "calls_per_s": round(result.throughput_per_s, 1),
        "server_cpu_us_per_call": round(server_cpu / calls * 1e6, 1) if server_cpu is not None else None,
        "client_cpu_us_per_call": round(client_cpu / calls * 1e6, 1),
    }


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.run(serve(int(sys.argv[1])))
    except ImportError:
        asyncio.run(serve(int(sys.argv[1])))
