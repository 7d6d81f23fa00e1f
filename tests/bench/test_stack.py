from __future__ import annotations

import os
from pathlib import Path

from choreoctl.bench.report import evaluate_targets
from choreoctl.bench.stack import find_service_pids, nats_config


def test_nats_config_sets_sync_interval() -> None:
    assert nats_config(None) is None
    assert nats_config("always") == "jetstream {\n  sync_interval: always\n}\n"


def _fake_process(proc: Path, pid: int, *argv: str) -> None:
    (proc / str(pid)).mkdir()
    (proc / str(pid) / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")


def test_service_pids_are_found_by_command_line(tmp_path: Path) -> None:
    _fake_process(tmp_path, 10, "/usr/bin/python3.11", "-m", "booking")
    _fake_process(tmp_path, 11, "/venv/bin/python", "-m", "payment")
    _fake_process(tmp_path, 12, "/venv/bin/python", "-m", "gateway")
    _fake_process(tmp_path, 13, "/venv/bin/python", "-m", "gateway")  # two gateways: ambiguous
    _fake_process(tmp_path, 14, "/venv/bin/nats-server", "-js")
    _fake_process(tmp_path, 15, "/bin/bash", "-m", "booking")  # not a python
    (tmp_path / "self").mkdir()
    _fake_process(tmp_path, os.getpid(), "/venv/bin/python", "-m", "payment")
    assert find_service_pids(tmp_path) == {"booking": 10, "payment": 11, "nats-server": 14}


def _run(
    throughput: float, p50: float, p99: float, rate: float = 1000.0, errors: int = 0
) -> dict[str, object]:
    latency = {"p50": p50, "p95": p99, "p99": p99, "max": p99}
    return {
        "throughput_per_s": throughput,
        "errors": errors,
        "pending": 0,
        "latency_ms": latency,
        "rate": rate,
    }


def test_targets_are_judged_from_the_figures() -> None:
    report = {
        "e2e": _run(1600, 20, 40),
        "e2e_low_load": _run(20, 4.0, 9, rate=20),
        "e2e_open": _run(1000, 8, 60),
        "ratio": 0.25,
        "pending_in_read_model": 0,
        "replay": {"events_per_s": 25_000.0},
        "scale": {
            "memory": {
                "from_stored": 10_000,
                "to_stored": 100_000,
                "processes": {"booking": {"change": 0.05}, "gateway": {"change": -0.12}},
            }
        },
    }
    met = [t["met"] for t in evaluate_targets(report)]
    assert met == [True, True, False, False, True, False]

    report["e2e"] = _run(1600, 20, 40, errors=1)
    report["e2e_open"] = _run(500, 8, 10, rate=500)
    met = [t["met"] for t in evaluate_targets(report)]
    assert met[0] is False and met[2] is None  # not measured at 1,000/s
