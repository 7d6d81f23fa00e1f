"""``choreo up --demo``: a few bookings through the gateway, their outcomes and emails, traces.

Creates bookings with the payment simulator's test tokens (one success kind,
each decline reason) through the public gRPC API and one through the HTTP API,
each with an email address, follows each with ``WatchBooking`` until it is
terminal (a server stream: no polling), prints a table of outcomes with the
subjects of the emails each booking caused (read from ``choreo up``'s SMTP sink,
``choreoctl.demo_emails``), then the trace of one declined workflow
(``GetWorkflowTrace``), which shows the compensating ``BookingCancelled`` and the
emails, and the stats of the demo's bookings (``GET /v1/stats``, ``choreoctl.demo_stats``).
Then the saga (``choreoctl.demo_saga``): a sold-out booking and a paid booking its
user cancels, each with its trace (the inventory facts, the refund).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, cast

import grpc
import httpx
from google.protobuf import json_format

from choreo.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from choreoctl.demo_calls import CANCELLED, CONFIRMED, status_name, watch_until_terminal
from choreoctl.demo_emails import (
    DEMO_EMAIL,
    EMAILS_PER_BOOKING,
    describe_emails,
    mail_note,
    subjects_by_booking,
)
from choreoctl.demo_saga import run_saga
from choreoctl.demo_stats import ExpectedStats, fetch_stats, stats_lines, window_start
from choreoctl.demo_trace import describe_error, show_trace
from choreoctl.stack.console import Console, format_table
from choreoctl.stack.devauth import DEV_USER
from choreoctl.stack.mailroute import MailRoute


class _Endpoints(Protocol):
    @property
    def grpc_target(self) -> str: ...

    @property
    def http_base(self) -> str: ...

    @property
    def bearer_token(self) -> str | None:
        """A token for the gateway when it verifies them (its ``sub`` is ``DEV_USER``)."""

    @property
    def admin_token(self) -> str | None:
        """A token with the ``bookings:admin`` scope (the stats), when the gateway verifies them."""

    @property
    def mail(self) -> MailRoute | None:
        """Where the emails go (``None``: unknown, none are looked for)."""

    @property
    def inventory_env(self) -> Mapping[str, str] | None:
        """The inventory service's environment, for its operator CLI (``None``: it does not run)."""


if TYPE_CHECKING:  # generic in the stubs only
    _UnaryUnary = grpc.aio.UnaryUnaryClientInterceptor[Any, Any]
    _UnaryStream = grpc.aio.UnaryStreamClientInterceptor[Any, Any]
else:
    _UnaryUnary = grpc.aio.UnaryUnaryClientInterceptor
    _UnaryStream = grpc.aio.UnaryStreamClientInterceptor


class _Bearer:
    """Adds ``authorization: Bearer <token>`` to the calls it intercepts."""

    def __init__(self, token: str) -> None:
        self._metadata = ("authorization", f"Bearer {token}")

    def _details(self, details: Any) -> Any:
        return details._replace(metadata=grpc.aio.Metadata(*(details.metadata or ()), self._metadata))


# Two classes: a channel files each interceptor under the first call kind it implements
# (an if/elif on its type), so one class doing both would never see the streaming calls.
class _BearerUnary(_Bearer, _UnaryUnary):
    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


class _BearerStream(_Bearer, _UnaryStream):
    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


@dataclass(frozen=True)
class DemoCase:
    """One booking to make and what it must end as."""

    token: str
    expected_status: int
    expected_reason: str = ""
    via: str = "grpc"
    amount_cents: int = 12_500
    currency: str = "EUR"
    email: str = DEMO_EMAIL


CASES: tuple[DemoCase, ...] = (
    DemoCase("tok_visa", CONFIRMED),
    DemoCase("tok_visa", CONFIRMED, amount_cents=4_200),
    DemoCase("tok_chargeDeclined", CANCELLED, "card_declined"),
    DemoCase("tok_chargeDeclinedInsufficientFunds", CANCELLED, "insufficient_funds"),
    DemoCase("tok_xyz123", CANCELLED, "invalid_payment_token"),
    DemoCase("tok_visa", CONFIRMED, via="http"),
)


@dataclass
class Outcome:
    """What happened to one demo booking."""

    case: DemoCase
    booking_id: str = ""
    status: int = gateway_pb2.BOOKING_STATUS_UNSPECIFIED
    reason: str = ""
    elapsed_ms: float | None = None
    error: str = ""
    #: Subjects of the emails it caused, in arrival order (``None``: not looked for).
    emails: list[str] | None = None

    @property
    def ok(self) -> bool:
        return (
            not self.error
            and self.status == self.case.expected_status
            and self.reason == self.case.expected_reason
        )

    @property
    def emails_ok(self) -> bool:
        """Every email it should have caused arrived (or emails were not looked for)."""
        return self.emails is None or len(self.emails) >= EMAILS_PER_BOOKING


async def create_via_grpc(stub: Any, case: DemoCase) -> gateway_pb2.Booking:
    request = gateway_pb2.CreateBookingRequest(
        user_id=DEV_USER,
        amount_cents=case.amount_cents,
        currency=case.currency,
        payment_token=case.token,
        idempotency_key=uuid.uuid4().hex,
        email=case.email,
    )
    response: gateway_pb2.CreateBookingResponse = await stub.CreateBooking(request, timeout=10)
    return response.booking


async def create_via_http(client: httpx.AsyncClient, case: DemoCase) -> gateway_pb2.Booking:
    response = await client.post(
        "/v1/bookings",
        json={
            "user_id": DEV_USER,
            "amount_cents": case.amount_cents,
            "currency": case.currency,
            "payment_token": case.token,
            "email": case.email,
        },
        headers={"Idempotency-Key": uuid.uuid4().hex},
    )
    if response.status_code != 201:
        raise RuntimeError(f"POST /v1/bookings answered {response.status_code}: {response.text[:200]}")
    # The body is the Booking in the protobuf JSON mapping.
    return json_format.ParseDict(response.json(), gateway_pb2.Booking(), ignore_unknown_fields=True)


async def run_case(stub: Any, http: httpx.AsyncClient, case: DemoCase) -> Outcome:
    outcome = Outcome(case)
    started = time.perf_counter()
    try:
        created = await (create_via_http(http, case) if case.via == "http" else create_via_grpc(stub, case))
        outcome.booking_id = created.booking_id
        final = await watch_until_terminal(stub, created.booking_id)
        outcome.elapsed_ms = (time.perf_counter() - started) * 1000
        outcome.status, outcome.reason = final.status, final.cancellation_reason
    except (grpc.RpcError, httpx.HTTPError, RuntimeError) as exc:
        outcome.error = describe_error(exc)
    return outcome


def outcomes_table(outcomes: Sequence[Outcome]) -> str:
    rows = []
    for o in outcomes:
        expected = status_name(o.case.expected_status) + (
            f"/{o.case.expected_reason}" if o.case.expected_reason else ""
        )
        if not o.ok:
            check = f"EXPECTED {expected}"
        elif not o.emails_ok:
            check = "EMAILS MISSING"
        else:
            check = "ok"
        rows.append(
            [
                o.booking_id or "-",
                o.case.via,
                o.case.token,
                status_name(o.status) if not o.error else "ERROR",
                o.reason or o.error or "-",
                f"{o.elapsed_ms:.0f}" if o.elapsed_ms is not None else "-",
                describe_emails(o.emails, booking_id=o.booking_id),
                check,
            ]
        )
    headers = ["booking id", "via", "token", "status", "reason", "ms", "emails (subjects)", "check"]
    return format_table(headers, rows)


async def run_demo(endpoints: _Endpoints, console: Console) -> int:
    """Runs the demo against a ready system; returns 0 when every booking ended as expected."""
    console.text(
        f"Demo: {len(CASES)} bookings through {endpoints.grpc_target} (gRPC) and {endpoints.http_base}\n"
    )
    since = window_start()
    token = endpoints.bearer_token
    # The stubs ask for a cast: their interceptor type is left open.
    interceptors = (
        [
            cast(grpc.aio.ClientInterceptor, _BearerUnary(token)),
            cast(grpc.aio.ClientInterceptor, _BearerStream(token)),
        ]
        if token
        else None
    )
    headers = {"authorization": f"Bearer {token}"} if token else None
    async with (
        grpc.aio.insecure_channel(endpoints.grpc_target, interceptors=interceptors) as channel,
        httpx.AsyncClient(base_url=endpoints.http_base, timeout=10, headers=headers) as http,
    ):
        # The generated stub is untyped; its methods are used as Any.
        stub_class: Any = gateway_pb2_grpc.BookingGatewayServiceStub
        stub = stub_class(channel)
        outcomes = await asyncio.gather(*(run_case(stub, http, case) for case in CASES))
        await attach_emails(outcomes, endpoints.mail)
        console.text(outcomes_table(outcomes))
        if endpoints.mail is not None:
            console.text(f"\n{mail_note(endpoints.mail)}")
        declined = next((o for o in outcomes if o.ok and o.status == CANCELLED), None)
        traced = False
        if declined is not None:
            label = f"{declined.booking_id} ({declined.case.token})"
            traced = await show_trace(stub, declined.booking_id, label, console)
        stats_ok = await show_stats(http, since, outcomes, endpoints.admin_token, console)
        # After the stats: its bookings are not the payment cases the stats are checked against.
        saga_ok = await run_saga(stub, http, endpoints.inventory_env, console)
    failed = [o for o in outcomes if not o.ok]
    if failed:
        console.text(f"\n{len(failed)} of {len(outcomes)} bookings did not end as expected.")
    unmailed = [o for o in outcomes if o.ok and not o.emails_ok]
    if unmailed:
        console.text(
            f"\n{len(unmailed)} of {len(outcomes)} bookings did not get their {EMAILS_PER_BOOKING} emails"
            " (see the notification log)."
        )
    if declined is None:
        console.text("\nNo declined booking to trace.")
    elif not traced:
        console.text("\nThe trace is not complete or not in causal order.")
    ok = not failed and not unmailed and traced and stats_ok and saga_ok
    console.text("\nDemo passed." if ok else "\nDemo FAILED.")
    return 0 if ok else 1


async def attach_emails(outcomes: Sequence[Outcome], mail: MailRoute | None) -> None:
    """Sets each created booking's email subjects, read from the sink (not with an exported server)."""
    created = [o for o in outcomes if o.booking_id]
    found = await subjects_by_booking(mail, [o.booking_id for o in created])
    if found is not None:
        for outcome in created:
            outcome.emails = found[outcome.booking_id]


async def show_stats(
    http: httpx.AsyncClient,
    since: str,
    outcomes: Sequence[Outcome],
    admin_token: str | None,
    console: Console,
) -> bool:
    """Prints the stats of the demo's window; True when they count the demo's bookings exactly."""
    created = [o for o in outcomes if o.booking_id and not o.error]
    expected = ExpectedStats.of(
        [(status_name(o.status), o.reason, o.case.amount_cents, o.case.currency) for o in created]
    )
    stats, problems = await fetch_stats(http, since, expected, token=admin_token)
    console.text(f"\nStats of the bookings created since {since} (GET /v1/stats, from analytics):")
    if stats is not None:
        console.text("\n".join(stats_lines(stats)))
    for problem in problems:
        console.text(f"  problem: {problem}")
    return not problems
