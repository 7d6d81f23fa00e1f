"""The demo's checks and tables (the demo itself runs in test_up.py against the real system)."""

from __future__ import annotations

import io

from choreo.gateway.v1 import gateway_pb2
from choreoctl.demo import CANCELLED, CASES, CONFIRMED, DemoCase, Outcome, outcomes_table
from choreoctl.demo_emails import DEMO_EMAIL, describe_emails
from choreoctl.demo_trace import NOTIFICATION_SENT, fetch_trace, show_trace, trace_problems
from choreoctl.stack.console import Console


def event(event_id: str, event_type: str, cause: str = "") -> gateway_pb2.TraceEvent:
    return gateway_pb2.TraceEvent(event_id=event_id, event_type=event_type, causation_id=cause)


def test_a_causal_chain_has_no_problems() -> None:
    chain = [event("a", "Created"), event("b", "Failed", "a"), event("c", "Cancelled", "b")]
    assert trace_problems(chain) == []
    started_by_a_command = [event("a", "Created", "command-1"), event("b", "Failed", "a")]
    assert trace_problems(started_by_a_command) == []


def test_broken_or_empty_traces_are_named() -> None:
    assert trace_problems([]) == ["the trace is empty"]
    out_of_order = [event("b", "Failed", "a"), event("a", "Created")]
    assert trace_problems(out_of_order) == [
        "the first fact Failed was caused by a later one",
        "Created was not caused by an earlier fact of the trace",
    ]


def test_a_branching_workflow_is_in_causal_order() -> None:
    """Booking's reaction and each email follow the same fact: a fact's cause is any earlier one."""
    branching = [
        event("a", "BookingCreated", "command-1"),
        event("n1", "NotificationSent", "a"),
        event("b", "PaymentFailed", "a"),
        event("c", "BookingCancelled", "b"),
        event("n2", "NotificationSent", "c"),
    ]
    assert trace_problems(branching) == []
    email_before_its_cause = [branching[0], event("n2", "NotificationSent", "c"), *branching[2:4]]
    assert trace_problems(email_before_its_cause) == [
        "NotificationSent was not caused by an earlier fact of the trace"
    ]


def test_outcome_checks_status_and_reason() -> None:
    case = DemoCase("tok_chargeDeclined", CANCELLED, "card_declined")
    assert Outcome(case, "b1", CANCELLED, "card_declined", 12.0).ok
    assert not Outcome(case, "b1", CANCELLED, "insufficient_funds", 12.0).ok
    assert not Outcome(case, "b1", CONFIRMED, "", 12.0).ok
    assert not Outcome(case, error="UNAVAILABLE: down").ok


def test_table_shows_each_outcome_and_what_was_expected() -> None:
    good = Outcome(CASES[0], "b-1", CONFIRMED, "", 7.4)
    bad = Outcome(CASES[2], "b-2", CONFIRMED, "", 9.0)
    lines = outcomes_table([good, bad]).splitlines()
    assert lines[0].split() == [
        *("booking", "id", "via", "token", "status", "reason", "ms", "emails", "(subjects)", "check")
    ]
    assert lines[2].split() == ["b-1", "grpc", "tok_visa", "CONFIRMED", "-", "7", "-", "ok"]
    assert lines[3].split()[-2:] == ["EXPECTED", "CANCELLED/card_declined"]


def test_the_cases_cover_success_each_decline_and_http() -> None:
    reasons = {case.expected_reason for case in CASES}
    assert reasons == {"", "card_declined", "insufficient_funds", "invalid_payment_token"}
    assert {case.via for case in CASES} == {"grpc", "http"}
    assert {case.email for case in CASES} == {DEMO_EMAIL}, "every demo booking is emailed about"


def test_each_outcome_shows_its_email_subjects_beside_it() -> None:
    received, confirmed = "We received your booking b-1", "Your booking b-1 is confirmed"
    mailed = Outcome(CASES[0], "b-1", CONFIRMED, "", 7.4, emails=[received, confirmed])
    half = Outcome(CASES[2], "b-2", CANCELLED, "card_declined", 9.0, emails=["We received your booking b-2"])
    none = Outcome(CASES[3], "b-3", CANCELLED, "insufficient_funds", 9.0, emails=[])
    assert mailed.emails_ok and not half.emails_ok and not none.emails_ok
    assert Outcome(CASES[0], "b-4", CONFIRMED, "", 1.0).emails_ok, "not looked for (an exported server)"
    lines = [" ".join(line.split()) for line in outcomes_table([mailed, half, none]).splitlines()]
    assert lines[2].endswith(f"7 {received} | {confirmed} ok")
    assert lines[3].endswith("9 We received your booking b-2 (expected 2) EMAILS MISSING")
    assert lines[4].endswith("9 none (expected 2) EMAILS MISSING")
    assert describe_emails(None) == "-"
    # Anyone on this machine may mail the sink: a subject cannot drive the terminal.
    assert describe_emails(["\x1b[2Jhi\r\nthere", "ok"]) == "?[2Jhi??there | ok"


WORKFLOW = [
    event("a", "choreo.booking.v1.BookingCreated", "command-1"),
    event("n1", NOTIFICATION_SENT, "a"),
    event("b", "choreo.payment.v1.PaymentFailed", "a"),
    event("c", "choreo.booking.v1.BookingCancelled", "b"),
    event("n2", NOTIFICATION_SENT, "c"),
]


class Traces:
    """Answers ``GetWorkflowTrace`` with the given traces in turn, as the projection catches up."""

    def __init__(self, *traces: list[gateway_pb2.TraceEvent]) -> None:
        self.traces = list(traces)
        self.calls = 0

    async def GetWorkflowTrace(
        self, request: gateway_pb2.GetWorkflowTraceRequest, timeout: float
    ) -> gateway_pb2.GetWorkflowTraceResponse:
        events = self.traces[min(self.calls, len(self.traces) - 1)]
        self.calls += 1
        return gateway_pb2.GetWorkflowTraceResponse(correlation_id="corr-1", events=events)


async def test_the_trace_is_asked_again_until_it_shows_both_emails() -> None:
    stub = Traces(WORKFLOW[:4], WORKFLOW)
    response = await fetch_trace(stub, "b-1", interval=0.01)
    assert stub.calls == 2 and len(response.events) == 5
    out = io.StringIO()
    assert await show_trace(Traces(WORKFLOW), "b-1", "b-1 (tok_chargeDeclined)", Console(out))
    assert out.getvalue().count(NOTIFICATION_SENT) == 2


async def test_a_trace_without_its_emails_is_a_problem() -> None:
    out = io.StringIO()
    complete = await show_trace(Traces(WORKFLOW[:4]), "b-1", "b-1", Console(out), timeout=0.1)
    assert not complete
    assert f"problem: expected 2 emails ({NOTIFICATION_SENT}), got 1" in out.getvalue()
