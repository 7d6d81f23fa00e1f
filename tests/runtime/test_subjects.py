"""NATS subject wildcards, as streams capture subjects (one matcher for the whole runtime)."""

from __future__ import annotations

import pytest

from choreo.subjects import stream_of, subject_matches


@pytest.mark.parametrize(
    ("pattern", "subject", "matches"),
    [
        ("payment.>", "payment.succeeded", True),
        ("payment.>", "payment.a.b", True),
        ("payment.>", "payment", False),
        ("payment.>", "paymentx.succeeded", False),
        ("payment.*", "payment.failed", True),
        ("payment.*", "payment.a.b", False),
        ("dlq.*.booking", "dlq.payment.booking", True),
        ("booking.created", "booking.created", True),
        ("booking.created", "booking.created.x", False),
    ],
)
def test_subject_matches_follows_nats_wildcards(pattern: str, subject: str, matches: bool) -> None:
    assert subject_matches(pattern, subject) is matches


def test_stream_of_names_the_capturing_stream() -> None:
    assert stream_of("payment.succeeded") == "PAYMENT"
    assert stream_of("booking.created") == "BOOKING"
    assert stream_of("dlq.booking.payment") == "DLQ"
    assert stream_of("cmd.booking.create") == "cmd.booking.create"
