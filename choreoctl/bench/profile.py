"""Where each process spends its CPU during a measurement window (py-spy).

``Profiler`` attaches ``py-spy record`` to every Python process of the system
for the length of the window (sampling, ``--nonblocking``: the processes are
never paused). It keeps py-spy's collapsed stacks (``<name>.txt``, which
speedscope.app or flamegraph.pl turn into a flame graph) and summarises them
(``summarize``). py-spy leaves out samples of threads it sees idle, so shares
are of the time the process was busy, as far as py-spy can tell.
"""

from __future__ import annotations

import asyncio
import linecache
import re
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

_LINE = re.compile(r":\d+\)$")
_FRAME = re.compile(r"\(([^()]+):(\d+)\)$")

#: The project's own packages: a sample is charged to the innermost of their frames.
APP_PACKAGES = ("choreo", "choreoctl", "booking", "payment", "gateway")


def find_py_spy() -> str | None:
    """The ``py-spy`` beside this Python, else on PATH (``None``: not installed)."""
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


def source_line(frame: str) -> str:
    """The source text of a py-spy frame ``func (path/file.py:N)``, found on ``sys.path`` ("" if not)."""
    match = _FRAME.search(frame)
    if match is None:
        return ""
    path, number = match.group(1), int(match.group(2))
    candidates = [Path(path)] if Path(path).is_absolute() else [Path(p) / path for p in sys.path if p]
    for candidate in candidates:
        if candidate.is_file():
            return linecache.getline(str(candidate), number).strip()
    return ""


def summarize(collapsed: str, top: int = 12, packages: tuple[str, ...] = APP_PACKAGES) -> dict[str, Any]:
    """The busiest code of py-spy's collapsed stacks (``frame;frame;... count`` lines).

    Returns:
        ``samples``; ``self``: the frames most often on top of the stack, with
        their line and its source text (py-spy cannot always tell a thread
        blocked in native code from a busy one: the source tells a worker
        waiting in ``queue.get()`` from the same worker running a SQLite call);
        ``app``: samples charged to the innermost frame of the project's own
        ``packages`` (stacks without one are charged to their top frame).
    """
    self_counts: Counter[str] = Counter()
    app_counts: Counter[str] = Counter()
    samples = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        samples += count
        self_counts[frames[-1]] += count
        own = [f for f in frames if any(f"({package}/" in f for package in packages)]
        app_counts[_LINE.sub(")", own[-1]) if own else frames[-1]] += count

    def share(counter: Counter[str], with_source: bool) -> list[list[Any]]:
        rows: list[list[Any]] = []
        for frame, n in counter.most_common(top):
            row: list[Any] = [frame, round(n / samples, 3)]
            if with_source:
                row.append(source_line(frame))
            rows.append(row)
        return rows

    return {"samples": samples, "self": share(self_counts, True), "app": share(app_counts, False)}


class Profiler:
    """Samples named processes with py-spy for a while.

    Args:
        py_spy: Path of the py-spy binary.
        out_dir: Receives ``<name>.txt`` (collapsed stacks) and ``<name>.log``.
        pids: The Python processes to sample, by name.
        rate: Samples per second.
    """

    def __init__(self, py_spy: str, out_dir: Path, pids: Mapping[str, int], rate: int = 200) -> None:
        self._py_spy = py_spy
        self._out_dir = out_dir
        self._pids = dict(pids)
        self._rate = rate
        self._running: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, duration: float) -> None:
        """Starts sampling every process for ``duration`` seconds (returns at once)."""
        self._out_dir.mkdir(parents=True, exist_ok=True)
        for name, pid in self._pids.items():
            with (self._out_dir / f"{name}.log").open("wb") as log:
                self._running[name] = subprocess.Popen(
                    [
                        self._py_spy,
                        "record",
                        "--pid",
                        str(pid),
                        "--duration",
                        str(max(1, round(duration))),
                        "--rate",
                        str(self._rate),
                        "--format",
                        "raw",
                        "--nonblocking",
                        "--output",
                        str(self._out_dir / f"{name}.txt"),
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )

    async def finish(self, timeout: float = 60.0) -> dict[str, Any]:
        """Waits for the samplers and summarises what each recorded."""
        results: dict[str, Any] = {}
        for name, process in self._running.items():
            try:
                await asyncio.wait_for(asyncio.to_thread(process.wait), timeout)
            except TimeoutError:
                process.kill()
            output = self._out_dir / f"{name}.txt"
            if output.exists():
                results[name] = {"file": str(output), **summarize(output.read_text(errors="replace"))}
            else:
                log = (self._out_dir / f"{name}.log").read_text(errors="replace")[-300:]
                results[name] = {"error": f"py-spy wrote nothing: {log}"}
        self._running.clear()
        return results
