"""A fact's time is its own field, else its ``ce-time`` (RFC 3339, with an offset), else it is unusable."""

from __future__ import annotations

import dataclasses

import pytest

from analytics.handlers import UnusableFactError, fact_time_us
from choreo.booking.v1 import events_pb2 as booking_events
from choreo.clock import to_timestamp
from tests.analytics.facts import T0, wrap

ENV = wrap(booking_events.BookingConfirmed(booking_id="b1"), "wf-1")


def test_the_field_wins_over_ce_time() -> None:
    assert fact_time_us(to_timestamp(T0 + 7), dataclasses.replace(ENV, time="2020-01-01T00:00:00Z")) == T0 + 7


@pytest.mark.parametrize(
    "ce_time", ["2026-01-01T00:00:00Z", "2026-01-01T00:00:00+00:00", "2026-01-01T01:00:00+01:00"]
)
def test_an_unset_field_falls_back_to_ce_time(ce_time: str) -> None:
    unset = booking_events.BookingConfirmed().confirmed_at
    assert fact_time_us(unset, dataclasses.replace(ENV, time=ce_time)) == T0


@pytest.mark.parametrize("ce_time", ["", "2026-01-01T00:00:00", "yesterday"])
def test_no_time_at_all_is_unusable(ce_time: str) -> None:
    """Without an offset a ce-time is no RFC 3339 time: each host would read its own local time."""
    unset = booking_events.BookingConfirmed().confirmed_at
    with pytest.raises(UnusableFactError, match="has no time"):
        fact_time_us(unset, dataclasses.replace(ENV, time=ce_time))
