"""Where each process spends its CPU during a measurement window (py-spy).

``Profiler`` attaches ``py-spy record`` to every Python process of the system
for the length of the window (sampling, ``--nonblocking``: the processes are
never paused). It keeps py-spy's collapsed stacks (``<name>.txt``, which
speedscope.app or flamegraph.pl turn into a flame graph) and summarises them:
the functions with the most samples on top of the stack (self) and anywhere in
it (total). Idle samples (waiting in the event loop) are not recorded, so
shares are of the time the process was busy.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

_LINE = re.compile(r":\d+\)$")


def find_py_spy() -> str | None:
    """The ``py-spy`` beside this Python, else on PATH (``None``: not installed)."""
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


def summarize(collapsed: str, top: int = 12) -> dict[str, Any]:
    """The busiest functions of py-spy's collapsed stacks (``frame;frame;... count`` lines).

    ``self`` keeps the line (it tells a thread waiting in ``queue.get`` from the
    same function running a database call: py-spy cannot always tell idle
    native waits apart); ``total`` groups frames by function and file.
    """
    self_counts: Counter[str] = Counter()
    total_counts: Counter[str] = Counter()
    samples = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        raw = stack.split(";")
        frames = [_LINE.sub(")", f) for f in raw]
        samples += count
        self_counts[raw[-1]] += count
        for frame in set(frames):
            total_counts[frame] += count

    def share(counter: Counter[str]) -> list[list[Any]]:
        return [[frame, round(n / samples, 3)] for frame, n in counter.most_common(top)] if samples else []

    return {"samples": samples, "self": share(self_counts), "total": share(total_counts)}


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
