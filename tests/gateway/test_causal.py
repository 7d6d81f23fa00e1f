"""Causal order of a workflow's facts, whatever the clocks say."""

from __future__ import annotations

from gateway.application.causal import causal_order
from gateway.readmodel.model import TraceRecord


def event(event_id: str, cause: str, at: int, stream: str = "BOOKING", seq: int = 1) -> TraceRecord:
    return TraceRecord(
        event_id=event_id,
        correlation_id="c",
        booking_id="b",
        event_type="t",
        source="s",
        subject="x",
        stream=stream,
        stream_sequence=seq,
        causation_id=cause,
        occurred_at_us=at,
    )


def ids(events: list[TraceRecord]) -> list[str]:
    return [e.event_id for e in events]


def test_a_cause_comes_first_even_when_its_clock_is_ahead() -> None:
    created = event("created", "command", at=1_000)
    paid = event("paid", "created", at=900, stream="PAYMENT")  # payment host's clock is behind
    confirmed = event("confirmed", "paid", at=950, seq=2)
    assert ids(causal_order([confirmed, paid, created])) == ["created", "paid", "confirmed"]


def test_independent_facts_are_ordered_by_time_then_stream_position() -> None:
    root = event("root", "", at=1)
    a = event("a", "root", at=5, stream="BOOKING", seq=3)
    b = event("b", "root", at=5, stream="BOOKING", seq=2)
    c = event("c", "root", at=4, stream="PAYMENT", seq=9)
    assert ids(causal_order([a, b, c, root])) == ["root", "c", "b", "a"]


def test_branches_interleave_by_time() -> None:
    root = event("root", "", at=1)
    left = event("left", "root", at=2)
    right = event("right", "root", at=3)
    left_child = event("left-child", "left", at=4)
    assert ids(causal_order([left_child, right, left, root])) == ["root", "left", "right", "left-child"]


def test_a_forged_cycle_loses_no_fact() -> None:
    x = event("x", "y", at=2)
    y = event("y", "x", at=1)
    root = event("root", "", at=0)
    assert ids(causal_order([x, y, root])) == ["root", "y", "x"]
    assert causal_order([]) == []
