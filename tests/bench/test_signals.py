"""``choreo bench`` stopped by SIGTERM leaves no process behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def descendants(root: int) -> dict[int, str]:
    """Every living process below ``root``, with its command line."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found: dict[int, str] = {}
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found[child] = command_line(child) or "?"
            todo.append(child)
    return found


def command_line(pid: int) -> str | None:
    """The command line of a living (not zombie) process, else None."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        argv = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    if state == "Z":
        return None
    return argv.replace(b"\0", b" ").decode(errors="replace").strip()


def test_sigterm_stops_every_process_the_benchmark_started(tmp_path: Path) -> None:
    tiny = ["--duration", "60", "--warmup", "0.5", "--rate", "0", "--low-rate", "0", "--scale", "0"]
    skip = ["--no-http", "--no-replay", "--no-fsync", "--no-stages"]
    bench = subprocess.Popen(
        [sys.executable, "-m", "choreoctl", "bench", *tiny, *skip, "--data-dir", str(tmp_path / "b")],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []

    def read() -> None:
        assert bench.stderr is not None
        lines.extend(line.rstrip("\n") for line in bench.stderr)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    started: dict[int, str] = {}
    try:
        deadline = time.monotonic() + 120
        # The ceiling runs once nats-server and every service are ready.
        while not any("ceiling:" in line for line in lines):
            assert bench.poll() is None and time.monotonic() < deadline, "\n".join(lines)
            time.sleep(0.1)
        time.sleep(2)  # the ceiling's workers too
        started = descendants(bench.pid)
        names = " ".join(started.values())
        for expected in ("nats-server", "-m booking", "-m payment", "-m gateway", "ceiling_worker"):
            assert expected in names, started

        bench.send_signal(signal.SIGTERM)
        code = bench.wait(90)
        reader.join(5)

        survivors = {pid: cmd for pid in started if (cmd := command_line(pid)) == started[pid]}
        assert survivors == {}, "\n".join(lines)
        assert code == 128 + signal.SIGTERM, "\n".join(lines)
        assert any("stopped by SIGTERM" in line for line in lines), "\n".join(lines)
    finally:
        if bench.poll() is None:
            bench.kill()
        for pid in started:
            if command_line(pid) == started[pid]:
                os.kill(pid, signal.SIGKILL)
