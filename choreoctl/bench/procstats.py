"""CPU time and memory of processes, read from Linux's /proc.

``utime + stime`` of ``/proc/<pid>/stat`` is the CPU a process has used since it
started; two samples around a measurement window give the CPU it spent in the
window. ``VmHWM`` (high-water mark) is its peak resident memory since start,
``VmRSS`` its current one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True, slots=True)
class ProcSample:
    """One reading of one process.

    Attributes:
        pid: Process id.
        cpu_s: User + system CPU seconds since the process started.
        rss_kb: Resident memory now.
        hwm_kb: Peak resident memory since the process started.
    """

    pid: int
    cpu_s: float
    rss_kb: int
    hwm_kb: int


def read_sample(pid: int, proc: Path = Path("/proc")) -> ProcSample | None:
    """Reads one process; ``None`` if it does not exist (any more)."""
    try:
        stat = (proc / str(pid) / "stat").read_text()
        status = (proc / str(pid) / "status").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ")".
    fields = stat[stat.rindex(")") + 2 :].split()
    # Fields 14 (utime) and 15 (stime) of stat(5), counted from 1, are 11 and 12 here.
    cpu = (int(fields[11]) + int(fields[12])) / _TICKS
    memory = {"VmRSS": 0, "VmHWM": 0}
    for line in status.splitlines():
        key, _, value = line.partition(":")
        if key in memory:
            memory[key] = int(value.split()[0])
    return ProcSample(pid, cpu, memory["VmRSS"], memory["VmHWM"])


def sample_all(pids: Mapping[str, int]) -> dict[str, ProcSample]:
    """Reads every named process that still exists."""
    samples = {}
    for name, pid in pids.items():
        s = read_sample(pid)
        if s is not None:
            samples[name] = s
    return samples


def process_costs(
    before: Mapping[str, ProcSample], after: Mapping[str, ProcSample], completed: int, window_s: float
) -> dict[str, dict[str, Any]]:
    """CPU spent by each process between two samples, total and per completed item.

    Args:
        before: Samples at the start of the window.
        after: Samples at its end.
        completed: Items (bookings, pipelines) completed in the window.
        window_s: Length of the window in seconds.

    Returns:
        For each process: ``cpu_s`` (in the window), ``cores`` (CPU seconds per
        second: 1.0 is one core fully busy), ``cpu_ms_per_item``, ``rss_mb``
        (at the end) and ``peak_rss_mb`` (since the process started).
    """
    costs: dict[str, dict[str, Any]] = {}
    for name, end in after.items():
        start = before.get(name)
        if start is None or start.pid != end.pid:
            continue
        cpu = end.cpu_s - start.cpu_s
        costs[name] = {
            "pid": end.pid,
            "cpu_s": round(cpu, 3),
            "cores": round(cpu / window_s, 3) if window_s > 0 else None,
            "cpu_ms_per_item": round(1000 * cpu / completed, 4) if completed else None,
            "rss_mb": round(end.rss_kb / 1024, 1),
            "peak_rss_mb": round(end.hwm_kb / 1024, 1),
        }
    return costs


def read_busy_cpu_s(proc: Path = Path("/proc")) -> float:
    """CPU seconds the whole machine has been busy (all cores, since boot).

    The difference over a window, minus what the measured processes used,
    is the load other programs put on the machine meanwhile.
    """
    fields = (proc / "stat").read_text().splitlines()[0].split()[1:]
    # user nice system idle iowait irq softirq steal ...: busy is everything but idle and iowait.
    values = [int(v) for v in fields[:8]]
    busy = values[0] + values[1] + values[2] + values[5] + values[6] + values[7]
    return busy / _TICKS


def machine_cores_used(busy_before: float, busy_after: float, window_s: float) -> float:
    """Average cores busy over a window (all programs)."""
    return (busy_after - busy_before) / window_s if window_s > 0 else 0.0
