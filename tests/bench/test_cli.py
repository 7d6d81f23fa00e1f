"""``choreo bench`` as a command: its options, its JSON contract, and a running system as target."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from choreoctl.bench.cli import options_from, report_clean
from choreoctl.bench.runner import BenchOptions, run_bench
from choreoctl.bench.stack import BenchStack
from choreoctl.cli import build_parser, load_subcommands

pytestmark = pytest.mark.e2e


def parse(*argv: str) -> argparse.Namespace:
    return build_parser(load_subcommands(("choreoctl.bench.cli",))).parse_args(["bench", *argv])


def test_options_follow_the_command_line() -> None:
    options = options_from(parse("--duration", "3", "--rate", "500", "--concurrency", "8", "--no-fsync"))
    assert (options.duration, options.rate, options.concurrency) == (3.0, 500.0, 8)
    assert options.fsync is False and options.http is True and options.scale == 100_000
    defaults = options_from(parse())
    assert defaults == BenchOptions()


def test_a_report_with_errors_or_pending_bookings_is_not_clean() -> None:
    assert report_clean({"e2e": {"errors": 0, "pending": 0}, "pending_in_read_model": 0})
    assert not report_clean({"e2e": {"errors": 1, "pending": 0}})
    assert not report_clean({"http": {"errors": 0, "pending": 2}})
    assert not report_clean({"e2e": {"errors": 0, "pending": 0}, "pending_in_read_model": 3})


def test_command_writes_the_json_contract(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.json"
    args = parse(
        *("--duration", "1", "--warmup", "0.3", "--concurrency", "4", "--rate", "0", "--low-rate", "0"),
        *("--scale", "0", "--no-http", "--no-replay", "--no-fsync", "--json", str(out)),
    )
    assert args.run(args) == 0
    report = json.loads(out.read_text())
    e2e = report["e2e"]
    assert e2e["completed"] > 0 and e2e["errors"] == 0
    assert e2e["throughput_per_s"] > 0
    assert set(e2e["latency_ms"]) >= {"p50", "p95", "p99", "max"}
    assert report["ceiling"]["throughput_per_s"] > 0
    assert report["ratio"] > 0
    assert "sync_interval" in report["settings"]["jetstream"]
    assert "gRPC closed loop" in capsys.readouterr().out


async def test_a_running_system_can_be_measured(tmp_path: Path) -> None:
    stack = BenchStack(tmp_path / "system")
    endpoints = await stack.start()
    try:
        options = BenchOptions(
            duration=1.0,
            warmup=0.3,
            concurrency=4,
            rate=0.0,
            low_rate=0.0,
            gateway=endpoints.grpc_target,
            http_url=endpoints.http_base,
            nats_url=endpoints.nats_url,
        )
        report = await run_bench(options, lambda _line: None)
    finally:
        await stack.stop()
    for key in ("e2e", "http"):
        assert report[key]["errors"] == 0 and report[key]["pending"] == 0
        assert report[key]["completed"] > 0
        assert "bench-client" in report[key]["processes"]
    assert report["ceiling"]["errors"] == 0
    assert report["settings"]["jetstream"]["sync_interval"].startswith("unknown")
    assert "scale" not in report and "replay" not in report and "durability" not in report
    assert report["pending_in_read_model"] == 0


async def test_a_named_data_dir_must_not_hold_an_earlier_run(tmp_path: Path) -> None:
    (tmp_path / "default").mkdir()
    (tmp_path / "default" / "booking.db").write_bytes(b"old")
    with pytest.raises(ValueError, match="already holds data"):
        await run_bench(BenchOptions(data_dir=tmp_path), lambda _line: None)
    assert (tmp_path / "default" / "booking.db").read_bytes() == b"old"
