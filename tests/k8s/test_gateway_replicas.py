"""Gateway replicas as the Deployment runs them: each its own read model on its own emptyDir.

Two gateway pods of the dev Deployment (the same ConfigMap, hence the same
``/data/gateway.db``, each on its own volume) run beside the real booking and
payment services. Bookings created through one replica reach their outcome on
the other, which only projects the streams. A container restart keeps the
emptyDir, so the gateway resumes from its checkpoint; a new pod starts empty,
replays the streams, and is ready only with the whole read model in place.
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import uuid
from pathlib import Path

import grpc
import pytest

from choreo.gateway.v1 import gateway_pb2 as gw
from choreo.gateway.v1 import gateway_pb2_grpc
from tests.k8s import client
from tests.k8s.localpod import LocalPod, sqlite_path
from tests.k8s.manifests import Manifests, SecretRef
from tests.k8s.stack import nats_passwords, single_nats, sqlite_urls

pytestmark = pytest.mark.slow

BOOKINGS = 12
TOKENS = ("tok_visa", "tok_chargeDeclined")
#: How the feed logs where it (re)starts reading a stream (gateway/projection/feed.py).
PROJECTING = re.compile(r"projecting BOOKING from sequence (\d+)")
#: Fields of a booking every replica must agree on (times may be rounded differently).
FIELDS = ("booking_id", "user_id", "amount_cents", "currency", "status", "correlation_id", "payment_id")


async def read_when_projected(
    stub: gateway_pb2_grpc.BookingGatewayServiceAsyncStub, booking_id: str, timeout: float = 60.0
) -> gw.Booking:
    """GetBooking until terminal; NOT_FOUND counts as "not projected yet" here, since how
    long the projection lags is timing (tests/gateway/test_read_your_writes.py covers the
    grace period)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    last: gw.Booking | None = None
    while loop.time() < end:
        try:
            last = (await stub.GetBooking(gw.GetBookingRequest(booking_id=booking_id), timeout=5)).booking
            if last.status in client.TERMINAL:
                return last
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in {*client.RETRYABLE, grpc.StatusCode.NOT_FOUND}:
                raise
        await asyncio.sleep(0.05)
    raise AssertionError(f"booking {booking_id} not terminal on this replica after {timeout}s: {last}")


def projection_starts(pod: LocalPod, since: int) -> list[int]:
    """Sequences the pod's BOOKING feed started from, logged after byte ``since`` of its log."""
    starts = []
    for line in pod.log_file.read_bytes()[since:].decode(errors="replace").splitlines():
        try:
            message = str(json.loads(line).get("msg", ""))
        except ValueError:
            continue
        match = PROJECTING.search(message)
        if match:
            starts.append(int(match.group(1)))
    return starts


def stored_bookings(pod: LocalPod, pod_file: str) -> dict[str, str]:
    """booking id -> status, read straight from the pod's SQLite file."""
    with sqlite3.connect(pod.local_path(pod_file)) as db:
        return dict(db.execute("SELECT booking_id, status FROM bookings").fetchall())


async def test_replicas_own_their_read_models(overlays: dict[str, Manifests], tmp_path: Path) -> None:
    dev = overlays["dev"]
    passwords = nats_passwords(dev)
    url = dev.container_env(dev.get("Deployment", "gateway")["spec"]["template"]["spec"]["containers"][0])[
        "GATEWAY_DATABASE_URL"
    ]
    assert not isinstance(url, SecretRef)
    pod_file = sqlite_path(str(url))
    assert pod_file is not None
    with single_nats(dev, tmp_path / "nats", passwords) as node:

        def pod(service: str, name: str) -> LocalPod:
            replace = {f"{service.upper()}_NATS_URL": node.url, **sqlite_urls(dev, service, tmp_path / name)}
            return LocalPod(dev, service, tmp_path / name, secrets=passwords, replace=replace)

        first, second = pod("gateway", "gateway-a"), pod("gateway", "gateway-b")
        pods = [pod("booking", "booking"), pod("payment", "payment"), first, second]
        try:
            for p in pods:
                p.start()
            for p in pods:
                p.wait_probe("readinessProbe")
            assert first.local_path(pod_file) != second.local_path(pod_file)
            assert first.local_path(pod_file).exists() and second.local_path(pod_file).exists()

            async with (
                grpc.aio.insecure_channel(f"127.0.0.1:{first.ports['grpc']}") as channel_a,
                grpc.aio.insecure_channel(f"127.0.0.1:{second.ports['grpc']}") as channel_b,
            ):
                stub_a, stub_b = client.stub(channel_a), client.stub(channel_b)
                created = [
                    (token, await client.create(stub_a, token, key=uuid.uuid4().hex))
                    for token in TOKENS * (BOOKINGS // len(TOKENS))
                ]
                # The other replica never saw the command: it learns of each booking from the streams.
                outcomes = {}
                for token, booking in created:
                    on_b = await read_when_projected(stub_b, booking.booking_id)
                    assert on_b.status == client.EXPECTED[token], on_b
                    on_a = await client.wait_terminal(stub_a, booking.booking_id)
                    assert [getattr(on_a, f) for f in FIELDS] == [getattr(on_b, f) for f in FIELDS]
                    outcomes[booking.booking_id] = on_a

            # Container restart (crash): the emptyDir keeps the read model; it resumes after it.
            log_size = second.log_file.stat().st_size
            second.kill()
            second.start()
            second.wait_probe("startupProbe")
            resumed = projection_starts(second, log_size)
            assert resumed and resumed[0] > 1, f"a restarted container resumes from its checkpoint: {resumed}"

            # A new pod: a new, empty emptyDir. It replays everything before it is ready.
            third = pod("gateway", "gateway-c")
            pods.append(third)
            assert not third.local_path(pod_file).exists()
            third.start()
            third.wait_probe("startupProbe")
            assert projection_starts(third, 0)[:1] == [1], "a new pod reads BOOKING from the start"
            expected = {
                b: gw.BookingStatus.Name(o.status).removeprefix("BOOKING_STATUS_")
                for b, o in outcomes.items()
            }
            assert stored_bookings(third, pod_file) == expected, "ready only with the whole read model"
            async with grpc.aio.insecure_channel(f"127.0.0.1:{third.ports['grpc']}") as channel_c:
                stub_c = client.stub(channel_c)
                for booking_id, on_a in outcomes.items():
                    on_c = (
                        await stub_c.GetBooking(gw.GetBookingRequest(booking_id=booking_id), timeout=5)
                    ).booking
                    assert [getattr(on_a, f) for f in FIELDS] == [getattr(on_c, f) for f in FIELDS]

            for p in reversed(pods):
                assert p.terminate() == 0, p.log_tail()
        finally:
            for p in pods:
                p.kill()
