"""Console summaries of the services' JSON-lines logs."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from choreoctl.stack.logtail import LogTail, summarize


def line(**fields: object) -> str:
    return json.dumps({"ts": "2025-01-01T00:00:00.000Z", "service": "booking", "logger": "x", **fields})


def test_warnings_and_errors_are_summarized() -> None:
    assert summarize(line(level="WARNING", msg="disconnected from NATS")) == "WARNING disconnected from NATS"
    text = summarize(
        line(level="ERROR", msg="handler failed", correlation_id="c1", exc="Traceback...\nValueError: bad")
    )
    assert text == "ERROR handler failed [correlation c1] (ValueError: bad)"


def test_info_is_shown_only_when_asked() -> None:
    record = line(level="INFO", msg="booking started")
    assert summarize(record) is None
    assert summarize(record, logging.INFO) == "INFO booking started"


def test_plain_text_passes_through_and_supervisor_lines_are_skipped() -> None:
    assert summarize("ModuleNotFoundError: No module named 'gateway'") == (
        "ModuleNotFoundError: No module named 'gateway'"
    )
    assert summarize(line(level="WARNING", logger="choreo.supervisor", msg="exit 1")) is None
    assert summarize("   ") is None


def test_tail_reads_only_new_complete_lines(tmp_path: Path) -> None:
    log = tmp_path / "booking.log"
    log.write_text(line(level="ERROR", msg="from an earlier run") + "\n")
    seen: list[tuple[str, str]] = []
    tail = LogTail({"booking": log, "payment": tmp_path / "absent.log"}, lambda n, m: seen.append((n, m)))
    tail.skip_existing()
    with log.open("a") as f:
        f.write(line(level="ERROR", msg="first") + "\n" + line(level="ERROR", msg="sec"))
    tail.poll()
    assert seen == [("booking", "ERROR first")], "the incomplete last line waits"
    with log.open("a") as f:
        f.write("\n")
    tail.poll()
    assert seen[-1] == ("booking", "ERROR sec")


def test_a_run_of_identical_lines_is_collapsed(tmp_path: Path) -> None:
    log = tmp_path / "booking.log"
    seen: list[str] = []
    tail = LogTail({"booking": log}, lambda n, m: seen.append(m), repeat_every=3600)
    refused = line(level="WARNING", msg="NATS error: refused")
    log.write_text("\n".join([refused] * 5 + [line(level="WARNING", msg="connected")]) + "\n")
    tail.poll()
    assert seen == [
        "WARNING NATS error: refused",
        "(the previous line came 4 times more)",
        "WARNING connected",
    ]


def test_a_long_run_is_still_reported_now_and_then(tmp_path: Path) -> None:
    log = tmp_path / "booking.log"
    seen: list[str] = []
    tail = LogTail({"booking": log}, lambda n, m: seen.append(m), repeat_every=0)
    log.write_text("\n".join([line(level="WARNING", msg="refused")] * 3) + "\n")
    tail.poll()
    assert seen == [
        "WARNING refused",
        "WARNING refused (again, once since)",
        "WARNING refused (again, once since)",
    ]
