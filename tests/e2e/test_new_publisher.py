"""A new *publishing* service joins: its own contract, stream and facts; nothing else is edited.

"loyalty" below is written as a third party would write it. Its contract is a
proto file of its own (compiled here, at test time, next to nothing of the
repository's but ``choreo/options/v1/options.proto``), whose fact names its
subject and stream; its topology declares the stream it owns and the fact its
route emits. No file under ``choreo/``, ``booking/``, ``payment/`` or ``gateway/``
knows it: the running services are the same processes as in every end-to-end
test, and the gateway shows its facts in the workflow's trace because its stream
is added to ``GATEWAY_STREAMS`` (configuration, not code).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import grpc_tools
import pytest
from grpc_tools import protoc

from choreo.booking.v1 import events_pb2 as booking_events
from choreo.gateway.v1 import gateway_pb2 as gw
from choreo.gateway.v1 import gateway_pb2_grpc
from choreo.handler import HandlerContext, Route
from choreo.runtime import open_runtime
from choreo.settings import ConsumerSettings
from choreo.topology import Stream, Subscription, Topology
from choreoctl.stack.natsserver import NatsServer
from tests.e2e.client import EXPECTED, request, wait_terminal
from tests.e2e.stack import Stack
from tests.support import eventually

ROOT = Path(__file__).resolve().parents[2]

#: loyalty's whole contract: one fact, on its own subject and stream.
CONTRACT = """
syntax = "proto3";

package loyalty.v1;

import "choreo/options/v1/options.proto";

// Points were awarded for a confirmed booking.
message PointsAwarded {
  option (choreo.options.v1.fact) = {
    subject: "loyalty.points_awarded"
    stream: "LOYALTY"
  };

  string booking_id = 1;
  int64 points = 2;
}
"""


@pytest.fixture(scope="module")
def loyalty_events(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """loyalty's generated contract, compiled from ``CONTRACT`` with protoc."""
    root = tmp_path_factory.mktemp("loyalty")
    (root / "loyalty" / "v1").mkdir(parents=True)
    (root / "loyalty" / "v1" / "events.proto").write_text(CONTRACT)
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    args = ["protoc", f"-I{root}", f"-I{ROOT / 'proto'}", f"-I{well_known}", f"--python_out={root}"]
    assert protoc.main([*args, "loyalty/v1/events.proto"]) == 0, "protoc failed"
    sys.path.insert(0, str(root))
    try:
        yield importlib.import_module("loyalty.v1.events_pb2")
    finally:
        sys.path.remove(str(root))


@pytest.fixture
def loyalty_stack(nats_server: NatsServer, tmp_path: Path) -> Iterator[Stack]:
    """The system, with LOYALTY among the streams the gateway traces (its only change: a setting)."""
    s = Stack(tmp_path, nats_server.url, env={"GATEWAY_STREAMS": "BOOKING,PAYMENT,LOYALTY"})
    try:
        s.start()
        yield s
    finally:
        s.stop()


def loyalty_topology(events: Any) -> Topology:
    """What loyalty declares: the stream it owns, the fact it publishes, its consumer and route."""

    async def award(event: booking_events.BookingConfirmed, ctx: HandlerContext) -> None:
        ctx.emit(events.PointsAwarded(booking_id=event.booking_id, points=42))

    confirmed = Route(booking_events.BookingConfirmed, award, emits=(events.PointsAwarded,))
    return Topology(
        service="loyalty",
        stream=Stream("LOYALTY", ("loyalty.>",)),
        publishes=(events.PointsAwarded,),
        subscriptions=(Subscription("loyalty", (confirmed,)),),
    )


async def test_a_publishing_service_joins_without_touching_the_others(
    loyalty_stack: Stack, loyalty_events: ModuleType, tmp_path: Path
) -> None:
    settings = ConsumerSettings(
        service_name="loyalty",
        nats_url=loyalty_stack.nats_url,
        database_url=f"sqlite:///{tmp_path / 'loyalty.db'}",
        log_format="text",
    )
    topology = loyalty_topology(loyalty_events)
    rt = await open_runtime(settings, topology, migrations=None)  # provisions LOYALTY
    service = rt.service([rt.consumer(sub) for sub in topology.subscriptions])
    await service.start()
    try:
        async with grpc.aio.insecure_channel(loyalty_stack.grpc_target) as channel:
            stub = gateway_pb2_grpc.BookingGatewayServiceStub(channel)
            created = {tok: (await stub.CreateBooking(request(tok))).booking for tok in EXPECTED}
            for booking in created.values():
                await wait_terminal(stub, booking.booking_id)
            confirmed = created["tok_visa"]

            async def traced() -> list[gw.TraceEvent]:
                trace = await stub.GetWorkflowTrace(
                    gw.GetWorkflowTraceRequest(correlation_id=confirmed.correlation_id)
                )
                events = list(trace.events)
                return events if any(e.source == "loyalty" for e in events) else []

            events = await eventually(traced, timeout=20)
            declined = created["tok_chargeDeclined"]
            declined_trace = await stub.GetWorkflowTrace(
                gw.GetWorkflowTraceRequest(correlation_id=declined.correlation_id)
            )
        info = await rt.js.stream_info("LOYALTY")
    finally:
        await service.stop(grace=5)

    # The fact is loyalty's, on its own stream and subject, in the booking's workflow, caused by
    # the BookingConfirmed it reacted to.
    by_type = {e.event_type: e for e in events}
    awarded = by_type["loyalty.v1.PointsAwarded"]
    assert (awarded.source, awarded.subject, awarded.stream) == (
        "loyalty",
        "loyalty.points_awarded",
        "LOYALTY",
    )
    assert awarded.causation_id == by_type["choreo.booking.v1.BookingConfirmed"].event_id
    # Only a confirmed booking earns points: the route reacts to BookingConfirmed alone.
    assert all(e.source != "loyalty" for e in declined_trace.events)
    assert info.config.subjects == ["loyalty.>"]
    assert info.state.messages == 1
