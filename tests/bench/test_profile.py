from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from choreoctl.bench.profile import Profiler, find_py_spy, source_line, summarize


def test_summary_counts_self_and_total_by_function() -> None:
    collapsed = "\n".join(
        [
            "main (app.py:10);handle (app.py:20);commit (db.py:5) 6",
            "main (app.py:10);handle (app.py:21);encode (codec.py:3) 3",
            "main (app.py:11) 1",
            "garbage",
        ]
    )
    summary = summarize(collapsed, packages=("shop",))
    assert summary["samples"] == 10
    assert summary["self"][0] == ["commit (db.py:5)", 0.6, ""]
    assert summarize("")["self"] == []


def test_samples_are_charged_to_the_innermost_project_frame() -> None:
    collapsed = "\n".join(
        [
            "run (asyncio/runners.py:118);handle (shop/orders.py:20);execute (sqlalchemy/engine.py:5) 6",
            "run (asyncio/runners.py:118);handle (shop/orders.py:21) 3",
            "run (asyncio/runners.py:118) 1",
        ]
    )
    assert summarize(collapsed, packages=("shop",))["app"] == [
        ["handle (shop/orders.py)", 0.9],
        ["run (asyncio/runners.py:118)", 0.1],
    ]


def test_source_line_is_read_from_sys_path() -> None:
    line = source_line("summarize (choreoctl/bench/profile.py:1)")
    assert line == '"""Where each process spends its CPU during a measurement window (py-spy).'
    assert source_line("no frame here") == ""


@pytest.mark.skipif(find_py_spy() is None, reason="py-spy is not installed")
async def test_profiler_samples_a_busy_process(tmp_path: Path) -> None:
    code = "import time\nt = time.time()\nwhile time.time() - t < 20: sum(range(1000))"
    busy = await asyncio.create_subprocess_exec(sys.executable, "-c", code)
    try:
        await asyncio.sleep(0.3)
        profiler = Profiler(find_py_spy() or "", tmp_path, {"busy": busy.pid})
        profiler.start(1.0)
        result = await profiler.finish()
    finally:
        busy.kill()
        await busy.wait()
    assert "error" not in result["busy"], result
    assert result["busy"]["samples"] > 0
    assert result["busy"]["file"] == str(tmp_path / "busy.txt")
