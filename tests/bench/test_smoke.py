"""A small run of the whole benchmark: the report is well-formed and every booking completed.

It checks the harness, not the speed: figures are only required to exist and
be consistent with each other.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from choreoctl.bench.report import format_report
from choreoctl.bench.runner import BenchOptions, run_bench
from choreoctl.bench.stages import STAGES

pytestmark = pytest.mark.e2e

LATENCY_KEYS = {"count", "mean", "p50", "p95", "p99", "max"}
SERVICES = {"booking", "payment", "gateway", "nats-server", "bench-client"}


def check_run(figures: dict[str, Any], *, processes: set[str]) -> None:
    """Every booking started was completed and the figures agree with each other."""
    assert figures["errors"] == 0, figures["error_samples"]
    assert figures["pending"] == 0
    assert figures["completed"] == figures["started"] > 0
    assert figures["states"] == {"CONFIRMED": figures["completed"]}
    assert 0 < figures["completed_in_window"] <= figures["completed"]
    assert figures["throughput_per_s"] > 0
    latency = figures["latency_ms"]
    assert set(latency) == LATENCY_KEYS
    assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"] <= latency["max"]
    assert set(figures["processes"]) == processes
    assert figures["system_cpu_ms_per_item"] > 0 and figures["cpu_bound_per_s"] > 0
    assert figures["machine_cores_busy"] >= figures["other_cores_busy"] >= 0
    for process in figures["processes"].values():
        assert process["cpu_s"] >= 0 and process["peak_rss_mb"] > 0


async def test_small_benchmark_run(tmp_path: Path) -> None:
    options = BenchOptions(
        duration=1.0,
        warmup=0.3,
        concurrency=8,
        rate=60.0,
        low_rate=10.0,
        scale=300,
        scale_first=150,
        scale_concurrency=16,
        data_dir=tmp_path / "bench",
    )
    lines: list[str] = []
    report = await run_bench(options, lines.append)

    # The contract of the JSON report.
    assert json.loads(json.dumps(report)) == report
    for key in ("e2e", "e2e_open", "e2e_low_load", "http"):
        check_run(report[key], processes=SERVICES)
        assert report[key]["settled"]["pending"] == 0
    ceiling = report["ceiling"]
    assert ceiling["errors"] == 0 and ceiling["pending"] == 0 and ceiling["throughput_per_s"] > 0
    assert {"ceiling-booking", "ceiling-payment", "ceiling-gateway", "nats-server"} <= set(
        ceiling["processes"]
    )
    grpc_floor = report["grpc_floor"]
    assert grpc_floor["calls_per_s"] > 0 and grpc_floor["client_cpu_us_per_call"] > 0
    assert grpc_floor["server_cpu_us_per_call"] is not None and grpc_floor["server_cpu_us_per_call"] > 0
    floor = report["ceiling_low_load"]
    assert floor["mode"] == "open" and floor["rate"] == 10.0
    assert floor["errors"] == 0 and floor["pending"] == 0 and floor["latency_ms"]["p50"] > 0
    ratio = report["e2e"]["throughput_per_s"] / ceiling["throughput_per_s"]
    assert report["ratio"] == pytest.approx(ratio, abs=0.001)
    assert report["pending_in_read_model"] == 0
    settings = report["settings"]
    assert "sync_interval" in settings["jetstream"]
    assert settings["databases"]["booking"]["journal_mode"] == "wal"
    assert set(settings["databases"]) == {"booking", "payment", "gateway"}

    # The services' own stages over the window, from their /metrics.
    own = report["e2e"]["service_stages"]
    assert {"consumer_lag", "handler", "consume_transaction", "consume_commit", "outbox_lag"} <= set(
        own["payment"]
    )
    assert {"command_transaction", "handler", "outbox_lag"} <= set(own["booking"])
    assert {"command_request", "projection_transaction"} <= set(own["gateway"])
    assert own["payment"]["prepare"]["count"] > 0 and own["booking"]["command_transaction"]["count"] > 0
    assert all(f["mean_ms"] >= 0 for stages in own.values() for f in stages.values())

    # A sample of bookings was split into stages (test_stages checks the arithmetic).
    stages = report["e2e"]["stages"]
    assert stages["sampled"] > 0 and stages["missing"] == 0
    assert set(stages["stages_ms"]) == set(STAGES)

    levels = report["scale"]["levels"]
    assert [level["stored"] for level in levels][-1] >= 300
    for level in levels:
        check_run(level, processes=SERVICES)
    assert set(report["scale"]["memory"]["processes"]) == {"booking", "payment", "gateway", "nats-server"}

    replay = report["replay"]
    assert replay["events"] >= 3 * levels[-1]["stored"]
    assert replay["seconds"] > 0 and replay["events_per_s"] > 0
    assert replay["pending_in_read_model"] == 0

    fsync = report["durability"]["fsync_always"]
    assert fsync["settings"]["jetstream"]["sync_interval"].startswith("always")
    check_run(fsync["e2e"], processes=SERVICES)
    assert fsync["ceiling"]["throughput_per_s"] > 0
    assert "grpc_floor" not in fsync and lines.count("gRPC floor: grpc.aio alone, an empty GetBooking") == 1

    assert report["restarts"] == {"booking": 0, "payment": 0, "gateway": 0}
    assert [t["met"] for t in report["targets"]]  # judged, whatever the outcome
    table = format_report(report)
    assert "gRPC closed loop" in table and "raw ceiling" in table and "targets:" in table
    assert "raw ceiling low load" in table and "raw NATS pipeline, same hops" in table
    assert "gRPC floor" in table and "service stages, closed loop" in table
    assert any(line.startswith("ceiling") for line in lines)
