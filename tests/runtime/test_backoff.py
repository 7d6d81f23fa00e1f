"""The one backoff: a capped doubling delay, counted per loop and started over after a success."""

from __future__ import annotations

import pytest

from choreo.retry import Backoff, RetryPolicy
from gateway.projection.feed import RETRY_BACKOFF


def test_delay_doubles_from_the_first_up_to_the_ceiling() -> None:
    backoff = Backoff(0.2, 5.0)
    assert [backoff.delay(n) for n in range(1, 8)] == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]


def test_no_failure_yet_counts_as_the_first() -> None:
    assert Backoff(0.5, 30.0).delay(0) == 0.5
    assert Backoff(0.5, 30.0).delay(-3) == 0.5


def test_the_ceiling_caps_the_first_delay_too() -> None:
    assert Backoff(20.0, 10.0).delay(1) == 10.0


def test_a_long_outage_stays_at_the_ceiling() -> None:
    """Thousands of failures in a row (hours of a dependency down) must not overflow the float."""
    assert Backoff(0.5, 30.0).delay(100_000) == 30.0
    assert RetryPolicy().delay(10_000) == 30.0


@pytest.mark.parametrize(
    ("first", "ceiling", "field"),
    [
        (0.0, 1.0, "first_seconds"),
        (-1.0, 1.0, "first_seconds"),
        (1.0, 0.0, "max_seconds"),
        (1.0, -2.0, "max_seconds"),
    ],
)
def test_a_delay_that_is_not_positive_is_refused(first: float, ceiling: float, field: str) -> None:
    with pytest.raises(ValueError, match=f"^{field} must be > 0"):
        Backoff(first, ceiling)


def test_retries_count_failures_and_start_over_after_a_success() -> None:
    retries = Backoff(0.1, 0.5).start()
    assert retries.failures == 0
    assert [retries.next() for _ in range(5)] == [0.1, 0.2, 0.4, 0.5, 0.5]
    assert retries.failures == 5
    retries.reset()
    assert retries.failures == 0
    assert retries.next() == 0.1


def test_each_loop_counts_its_own_failures() -> None:
    backoff = Backoff(1.0, 8.0)
    one, other = backoff.start(), backoff.start()
    one.next()
    one.next()
    assert other.next() == 1.0


def test_retry_policy_delays_by_delivery_count() -> None:
    policy = RetryPolicy(max_deliveries=5, base_seconds=0.4, max_seconds=5.0)
    assert policy.backoff == Backoff(0.4, 5.0)
    assert [policy.delay(n) for n in range(1, 6)] == [0.4, 0.8, 1.6, 3.2, 5.0]


def test_projection_backoff_is_the_documented_one() -> None:
    """The gateway feed pauses 0.1, 0.2, 0.4, ... up to 2 s."""
    retries = RETRY_BACKOFF.start()
    assert [retries.next() for _ in range(7)] == [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0]
