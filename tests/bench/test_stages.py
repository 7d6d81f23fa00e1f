from __future__ import annotations

from datetime import UTC, datetime

import pytest

from choreoctl.bench.load import Trip
from choreoctl.bench.stages import CONFIRMED, CREATED, PAID, STAGES, Fact, parse_time, split


def test_parse_time_reads_ce_time() -> None:
    stamp = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    assert parse_time("2026-01-02T03:04:05.678901Z") == pytest.approx(stamp.timestamp())


def test_stages_add_up_to_the_latency() -> None:
    trip = Trip("wf", sent=100.000, created=100.010, terminal=100.050)
    facts = {
        CREATED: Fact(stamped=100.004, stored=100.008),
        PAID: Fact(stamped=100.020, stored=100.022),
        CONFIRMED: Fact(stamped=100.030, stored=100.035),
    }
    parts = split(trip, facts)
    assert parts is not None and list(parts) == list(STAGES)
    assert parts["create_to_handler"] == pytest.approx(4.0)
    assert parts["create_reply"] == pytest.approx(6.0)
    assert parts["payment_consumer"] == pytest.approx(12.0)
    assert parts["projection"] == pytest.approx(15.0)
    # The reply runs beside the event chain; every other stage is on the critical path.
    on_path = sum(v for k, v in parts.items() if k != "create_reply")
    assert on_path == pytest.approx((trip.terminal - trip.sent) * 1000)


def test_a_missing_fact_leaves_the_booking_out() -> None:
    trip = Trip("wf", 1.0, 2.0, 3.0)
    assert split(trip, {CREATED: Fact(1.5, 1.6)}) is None
