from __future__ import annotations

import asyncio

import pytest

from choreoctl.bench.driver import LoadSpec, StillPending, run_count, run_load


async def test_closed_loop_counts_every_outcome() -> None:
    calls = 0

    async def op() -> str:
        nonlocal calls
        calls += 1
        n = calls
        await asyncio.sleep(0.002)
        if n % 10 == 0:
            raise RuntimeError("boom")
        if n % 10 == 5:
            raise StillPending("slow")
        return "CONFIRMED"

    marks: list[str] = []
    result = await run_load(
        op,
        LoadSpec("closed", duration=0.3, warmup=0.1, concurrency=4),
        on_window_start=lambda: marks.append("start"),
        on_window_end=lambda: marks.append("end"),
    )
    assert marks == ["start", "end"]
    assert result.started == calls
    assert result.started == result.ended + result.errors + result.pending
    assert result.errors == calls // 10
    assert result.pending >= 1
    assert result.states["CONFIRMED"] == result.ended
    assert 0 < result.in_window <= result.ended
    assert len(result.latencies_ms) == result.in_window
    assert result.error_samples[0] == "RuntimeError: boom"
    report = result.to_dict()
    assert report["concurrency"] == 4 and report["throughput_per_s"] == pytest.approx(
        result.in_window / 0.3, 0.1
    )


async def test_open_loop_starts_at_the_rate_and_charges_from_schedule() -> None:
    async def op() -> str:
        await asyncio.sleep(0.01)
        return "CONFIRMED"

    result = await run_load(op, LoadSpec("open", duration=0.5, warmup=0.1, rate=200))
    # 0.6 s at 200/s: 120 scheduled starts, every one followed to its end.
    assert result.started == 120
    assert result.ended == 120 and result.errors == 0 and result.pending == 0
    assert min(result.latencies_ms) >= 10.0
    assert result.to_dict()["rate"] == 200


async def test_run_count_runs_exactly_that_many() -> None:
    async def op() -> str:
        await asyncio.sleep(0.001)
        return "CONFIRMED"

    result = await run_count(op, 57, concurrency=8)
    assert result.started == result.ended == result.in_window == 57
    assert result.window_s > 0 and result.throughput_per_s > 0
