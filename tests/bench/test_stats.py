from __future__ import annotations

import os

from choreoctl.bench.procstats import process_costs, read_sample, sample_all
from choreoctl.bench.stats import LatencySummary, percentile


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.50) == 50.0
    assert percentile(values, 0.95) == 95.0
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 1.0) == 100.0
    assert percentile([7.0], 0.99) == 7.0
    assert percentile([], 0.5) == 0.0


def test_summary_sorts_and_rounds() -> None:
    summary = LatencySummary.of([3.0, 1.0, 2.0, 10.0])
    assert (summary.count, summary.p50, summary.max) == (4, 2.0, 10.0)
    assert summary.mean == 4.0
    assert LatencySummary.of([]).to_dict() == {
        "count": 0,
        "mean": 0.0,
        "p50": 0.0,
        "p95": 0.0,
        "p99": 0.0,
        "max": 0.0,
    }


def test_own_process_is_sampled_and_cpu_grows() -> None:
    before = read_sample(os.getpid())
    assert before is not None
    total = 0
    while True:
        total += sum(range(10_000))
        after = read_sample(os.getpid())
        assert after is not None
        if after.cpu_s > before.cpu_s:
            break
    assert after.rss_kb > 0 and after.hwm_kb >= after.rss_kb
    costs = process_costs({"me": before}, {"me": after}, completed=10, window_s=1.0)
    assert costs["me"]["cpu_s"] > 0
    assert costs["me"]["cpu_ms_per_item"] == round(1000 * (after.cpu_s - before.cpu_s) / 10, 4)


def test_missing_process_is_skipped() -> None:
    assert read_sample(2**22 + 12345) is None
    assert sample_all({"gone": 2**22 + 12345}) == {}
