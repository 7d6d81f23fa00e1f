"""NATS subject wildcards, as streams capture subjects (one matcher for the whole runtime)."""

from __future__ import annotations

import pytest

from choreo.topology import subject_matches
from tests.streams import BOOKING, PAYMENT


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


def test_a_stream_captures_its_declared_subjects_only() -> None:
    assert PAYMENT.captures("payment.succeeded")
    assert BOOKING.captures("booking.created")
    assert not BOOKING.captures("payment.succeeded")
    assert not BOOKING.captures("cmd.booking.create")
