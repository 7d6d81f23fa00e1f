"""The demo's saga part: its trace checks, its waits, the operator CLI, its run against a fake gateway.

The demo itself runs in test_up.py against the real system; here a fake gateway
(the gRPC stub's calls and the HTTP cancel) tells the saga's story, or leaves a
part of it out, and the demo must pass or fail for the right reason.
"""

from __future__ import annotations

import io
import itertools
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from google.protobuf import json_format

from choreo.gateway.v1 import gateway_pb2 as gw
from choreoctl.demo_saga import run_saga, set_capacity
from choreoctl.demo_saga_checks import (
    CANCELLED_FACT,
    CONFIRMED_FACT,
    CREATED,
    PAID_THEN_CANCELLED,
    REFUNDED,
    REFUSED,
    RELEASED,
    RESERVED,
    SOLD_OUT,
    SUCCEEDED,
    gap_ms,
    saga_problems,
    wait_for_facts,
)
from choreoctl.demo_trace import NOTIFICATION_SENT
from choreoctl.stack.console import Console


def event(event_id: str, event_type: str, cause: str = "", at_ms: int = 0) -> gw.TraceEvent:
    e = gw.TraceEvent(event_id=event_id, event_type=event_type, causation_id=cause)
    e.occurred_at.FromMilliseconds(1_700_000_000_000 + at_ms)
    return e


def paid_then_cancelled() -> list[gw.TraceEvent]:
    return [
        event("c", CREATED, "cmd-create", 0),
        event("r", RESERVED, "c", 5),
        event("p", SUCCEEDED, "r", 9),
        event("k", CONFIRMED_FACT, "p", 12),
        event("x", CANCELLED_FACT, "cmd-cancel", 100),
        event("l", RELEASED, "x", 104),
        event("f", REFUNDED, "x", 131),
        event("n", NOTIFICATION_SENT, "x", 140),
    ]


def sold_out() -> list[gw.TraceEvent]:
    return [event("c", CREATED, "cmd"), event("s", REFUSED, "c"), event("x", CANCELLED_FACT, "s")]


def test_the_stories_as_told_have_no_problems() -> None:
    assert saga_problems(PAID_THEN_CANCELLED, paid_then_cancelled()) == []
    assert saga_problems(SOLD_OUT, sold_out()) == []
    assert gap_ms(paid_then_cancelled(), CANCELLED_FACT, REFUNDED) == 31
    assert gap_ms(sold_out(), CANCELLED_FACT, REFUNDED) is None


def test_a_missing_or_repeated_compensation_is_a_problem() -> None:
    events = paid_then_cancelled()
    no_refund = [e for e in events if e.event_type != REFUNDED]
    assert saga_problems(PAID_THEN_CANCELLED, no_refund) == ["PaymentRefunded is missing"]
    twice = [*events, event("f2", REFUNDED, "x", 150), event("l2", RELEASED, "x", 151)]
    assert saga_problems(PAID_THEN_CANCELLED, twice) == [
        "InventoryReleased appears 2 times, not once",
        "PaymentRefunded appears 2 times, not once",
    ]


def test_a_sold_out_booking_is_never_charged_nor_reserved() -> None:
    charged = [*sold_out(), event("p", SUCCEEDED, "c")]
    assert saga_problems(SOLD_OUT, charged) == ["PaymentSucceeded must not happen"]
    reserved = [*sold_out(), event("r", RESERVED, "c"), event("l", RELEASED, "x")]
    assert saga_problems(SOLD_OUT, reserved) == [
        "InventoryReserved must not happen",
        "InventoryReleased must not happen",
    ]


def test_each_fact_follows_its_cause_and_the_compensations_follow_the_cancellation() -> None:
    events = paid_then_cancelled()
    refund_first = [events[6], *events[:6], events[7]]
    assert saga_problems(PAID_THEN_CANCELLED, refund_first) == ["PaymentRefunded comes before its cause"]
    # A refund caused by the payment, not by the cancellation, is not the saga's compensation.
    misattributed = [*events[:6], event("f", REFUNDED, "p", 131)]
    assert saga_problems(PAID_THEN_CANCELLED, misattributed) == [
        "PaymentRefunded was not caused by BookingCancelled"
    ]
    # A cancellation without a cause in the trace is the user's command, not a sold-out one's.
    orphan = [*sold_out()[:2], event("x", CANCELLED_FACT, "cmd-cancel")]
    assert saga_problems(SOLD_OUT, orphan) == [
        "BookingCancelled was not caused by a fact of the trace",
        "BookingCancelled was not caused by InventoryReservationFailed",
    ]


class TraceStub:
    """GetWorkflowTrace answering each of ``pages`` in turn, then the last one again."""

    def __init__(self, *pages: list[gw.TraceEvent]) -> None:
        self.pages = pages
        self.calls = 0

    async def GetWorkflowTrace(self, request: gw.GetWorkflowTraceRequest, timeout: float) -> Any:
        page = self.pages[min(self.calls, len(self.pages) - 1)]
        self.calls += 1
        return gw.GetWorkflowTraceResponse(correlation_id="corr", events=page)


async def test_the_trace_is_asked_again_until_its_facts_and_emails_are_there() -> None:
    full = paid_then_cancelled()
    emails = [event(f"n{i}", NOTIFICATION_SENT, "c") for i in range(2)]
    stub = TraceStub(full[:4], full[:6], full + emails)
    traced = await wait_for_facts(stub, "b-1", PAID_THEN_CANCELLED, interval=0.01)
    assert stub.calls == 3 and traced.events == full + emails and traced.complete_after is not None
    # Facts there, an email late: waited for at most the grace, then shown as they are.
    stub = TraceStub(full)
    traced = await wait_for_facts(stub, "b-1", PAID_THEN_CANCELLED, email_grace=0.1, interval=0.01)
    assert traced.events == full and traced.complete_after is not None and stub.calls > 3
    # A fact that never comes: the trace as it is when the timeout passes, not complete.
    stub = TraceStub(full[:6])
    traced = await wait_for_facts(stub, "b-1", PAID_THEN_CANCELLED, timeout=0.2, interval=0.01)
    assert traced.complete_after is None and len(traced.events) == 6


def fake_cli(tmp_path: Path, code: int = 0, sleep: float = 0) -> tuple[str, ...]:
    """A stand-in for ``python -m inventory``: records its arguments and the database it was given."""
    script = tmp_path / "inventory_cli.py"
    script.write_text(
        "import json, os, sys, time\n"
        f"time.sleep({sleep})\n"
        f"open({str(tmp_path / 'cli.json')!r}, 'w').write(json.dumps("
        "[sys.argv[1:], os.environ.get('INVENTORY_DATABASE_URL')]))\n"
        "print('some output'); print('the last line', flush=True)\n"
        f"sys.exit({code})\n"
    )
    return (sys.executable, str(script))


async def test_capacity_is_set_with_inventorys_own_environment(tmp_path: Path) -> None:
    env = {"INVENTORY_DATABASE_URL": "sqlite+aiosqlite:///var/inventory.db"}
    assert await set_capacity(env, "demo-room-1", 1, command=fake_cli(tmp_path)) is None
    argv, url = json.loads((tmp_path / "cli.json").read_text())
    assert (argv, url) == (["capacity", "set", "demo-room-1", "1"], env["INVENTORY_DATABASE_URL"])


async def test_a_failing_or_stuck_or_absent_cli_is_a_problem(tmp_path: Path) -> None:
    failed = await set_capacity({}, "r", 1, command=fake_cli(tmp_path, code=2))
    assert failed == "python -m inventory capacity set r 1 exited 2: some output | the last line"
    stuck = await set_capacity({}, "r", 1, command=fake_cli(tmp_path, sleep=5), timeout=0.3)
    assert stuck == "python -m inventory capacity set r 1 did not finish in 0.3s"
    assert await set_capacity(None, "r", 1) == "the inventory service does not run here: no capacity to set"


class FakeGateway:
    """The saga's story as the gateway would show it, for a resource of one unit.

    ``refund``: whether payment refunds the cancelled booking.
    """

    def __init__(self, refund: bool = True) -> None:
        self.refund = refund
        self.ids = itertools.count(1)
        self.bookings: dict[str, gw.Booking] = {}
        self.traces: dict[str, list[gw.TraceEvent]] = {}
        self.requests: list[gw.CreateBookingRequest] = []
        self.held: str | None = None

    async def CreateBooking(self, request: gw.CreateBookingRequest, timeout: float) -> Any:
        self.requests.append(request)
        booking_id = f"b-{next(self.ids)}"
        trace = [event(f"{booking_id}-c", CREATED, "cmd")]
        if self.held is None:
            self.held = booking_id
            status, reason = gw.BOOKING_STATUS_CONFIRMED, ""
            trace += [
                event(f"{booking_id}-r", RESERVED, f"{booking_id}-c"),
                event(f"{booking_id}-p", SUCCEEDED, f"{booking_id}-r"),
                event(f"{booking_id}-k", CONFIRMED_FACT, f"{booking_id}-p"),
            ]
        else:
            status, reason = gw.BOOKING_STATUS_CANCELLED, "sold_out"
            trace += [
                event(f"{booking_id}-s", REFUSED, f"{booking_id}-c"),
                event(f"{booking_id}-x", CANCELLED_FACT, f"{booking_id}-s"),
            ]
        trace += [event(f"{booking_id}-n{i}", NOTIFICATION_SENT, f"{booking_id}-c") for i in range(3)]
        self.bookings[booking_id] = gw.Booking(
            booking_id=booking_id, status=status, cancellation_reason=reason
        )
        self.traces[booking_id] = trace
        return gw.CreateBookingResponse(booking=gw.Booking(booking_id=booking_id))

    def WatchBooking(self, request: gw.WatchBookingRequest, timeout: float) -> Any:
        booking = self.bookings[request.booking_id]

        class Call:
            def __aiter__(self) -> AsyncIterator[gw.WatchBookingResponse]:
                async def stream() -> AsyncIterator[gw.WatchBookingResponse]:
                    yield gw.WatchBookingResponse(booking=booking)

                return stream()

            def cancel(self) -> None:
                pass

        return Call()

    async def GetWorkflowTrace(self, request: gw.GetWorkflowTraceRequest, timeout: float) -> Any:
        return gw.GetWorkflowTraceResponse(
            correlation_id=f"corr-{request.booking_id}", events=self.traces[request.booking_id]
        )

    def http(self, request: httpx.Request) -> httpx.Response:
        """``POST /v1/bookings/{id}:cancel``."""
        booking_id = request.url.path.removeprefix("/v1/bookings/").removesuffix(":cancel")
        booking = self.bookings.get(booking_id)
        if request.method != "POST" or not request.url.path.endswith(":cancel") or booking is None:
            return httpx.Response(404, json={"code": "NOT_FOUND"})
        booking.status, booking.cancellation_reason = gw.BOOKING_STATUS_CANCELLED, "cancelled_by_user"
        trace = self.traces[booking_id]
        trace += [
            event(f"{booking_id}-x", CANCELLED_FACT, "cmd-cancel"),
            event(f"{booking_id}-l", RELEASED, f"{booking_id}-x"),
        ]
        if self.refund:
            trace.append(event(f"{booking_id}-f", REFUNDED, f"{booking_id}-x"))
        return httpx.Response(200, json=json_format.MessageToDict(booking))


async def run_against(gateway: FakeGateway, tmp_path: Path) -> tuple[bool, str]:
    out = io.StringIO()
    async with httpx.AsyncClient(base_url="http://gw", transport=httpx.MockTransport(gateway.http)) as http:
        ok = await run_saga(gateway, http, {}, Console(out), command=fake_cli(tmp_path), timeout=0.5)
    return ok, out.getvalue()


async def test_the_saga_demo_tells_both_stories(tmp_path: Path) -> None:
    gateway = FakeGateway()
    ok, out = await run_against(gateway, tmp_path)
    assert ok, out
    argv, _ = json.loads((tmp_path / "cli.json").read_text())
    resource = argv[2]
    assert argv == ["capacity", "set", resource, "1"] and resource.startswith("demo-room-")
    assert [(r.resource_id, r.quantity, r.payment_token) for r in gateway.requests] == [
        (resource, 1, "tok_visa"),
        (resource, 1, "tok_visa"),
    ]
    rows = [line.split() for line in out.splitlines() if line.startswith("b-")]
    assert rows[0][:2] == ["b-1", resource] and rows[1][:2] == ["b-2", resource]
    assert rows[0][-3:] == ["CANCELLED", "cancelled_by_user", "ok"]
    assert rows[1][-3:] == ["CANCELLED", "sold_out", "ok"]
    assert "Trace of booking b-1 (paid, then cancelled by its user), correlation id corr-b-1:" in out
    assert "Trace of booking b-2 (sold out), correlation id corr-b-2:" in out
    for fact in (RESERVED, REFUSED, RELEASED, REFUNDED):
        assert fact in out
    assert "Refund: PaymentRefunded 0 ms after BookingCancelled" in out
    assert "problem" not in out


async def test_the_saga_demo_fails_without_the_refund(tmp_path: Path) -> None:
    ok, out = await run_against(FakeGateway(refund=False), tmp_path)
    assert not ok
    assert "  problem: PaymentRefunded is missing" in out
    assert "1 of 2 saga bookings did not tell their story." in out
    assert "Refund:" not in out


async def test_the_saga_demo_fails_when_the_cancel_is_refused(tmp_path: Path) -> None:
    gateway = FakeGateway()
    gateway.http = lambda request: httpx.Response(409, json={"code": "FAILED_PRECONDITION"})  # type: ignore[method-assign]
    ok, out = await run_against(gateway, tmp_path)
    assert not ok
    assert "RuntimeError: POST /v1/bookings/b-1:cancel answered 409" in out
    assert "ended CONFIRMED, not CANCELLED/cancelled_by_user" in out


async def test_the_saga_demo_fails_when_capacity_cannot_be_set(tmp_path: Path) -> None:
    out = io.StringIO()
    gateway = FakeGateway()
    async with httpx.AsyncClient(base_url="http://gw", transport=httpx.MockTransport(gateway.http)) as http:
        ok = await run_saga(gateway, http, {}, Console(out), command=fake_cli(tmp_path, code=1), timeout=0.5)
    assert not ok and gateway.requests == []
    assert "problem: python -m inventory capacity set demo-room-" in out.getvalue()
