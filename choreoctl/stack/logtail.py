"""Follows the services' log files and reports what a person should see.

Services write JSON lines (``choreo.logs``) to their log file; this reads what
was appended since the last look and turns warnings and errors into one-line
summaries. Lines that are not JSON are passed through: they are what a process
prints before its logging is set up, typically the traceback of a failed start.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

#: Receives (service name, summary line).
Emit = Callable[[str, str], None]

#: The supervisor's own lines are already on the console.
_SKIP_LOGGERS = {"choreo.supervisor"}
_MAX_LINE = 300


def summarize(line: str, min_level: int = logging.WARNING) -> str | None:
    """The console form of one log line, or ``None`` when it is not worth showing.

    Args:
        line: One line of a log file, without its newline.
        min_level: JSON records below this level are not shown.
    """
    text = line.rstrip()
    if not text.strip():
        return None
    try:
        record = json.loads(text)
    except ValueError:
        return text[:_MAX_LINE]  # indentation kept: tracebacks stay readable
    if not isinstance(record, dict):
        return text[:_MAX_LINE]
    if record.get("logger") in _SKIP_LOGGERS:
        return None
    level = str(record.get("level", "INFO"))
    if logging.getLevelNamesMapping().get(level.upper(), logging.WARNING) < min_level:
        return None
    summary = f"{level} {record.get('msg', '')}"
    if record.get("correlation_id"):
        summary += f" [correlation {record['correlation_id']}]"
    exc = record.get("exc")
    if isinstance(exc, str) and exc.strip():
        summary += f" ({exc.strip().splitlines()[-1]})"
    return summary[:_MAX_LINE]


class LogTail:
    """Reads new complete lines of several log files.

    Args:
        files: Log file of each service.
        emit: Receives the summaries.
        min_level: Least level of JSON records shown.
    """

    def __init__(
        self,
        files: Mapping[str, Path],
        emit: Emit,
        min_level: int = logging.WARNING,
        repeat_every: float = 30.0,
    ) -> None:
        self.files = dict(files)
        self.emit = emit
        self.min_level = min_level
        self.repeat_every = repeat_every
        self._offsets = dict.fromkeys(self.files, 0)
        self._repeats = {name: _Repeats() for name in self.files}

    def skip_existing(self) -> None:
        """Starts from the current end of each file (earlier runs are not replayed)."""
        for name, path in self.files.items():
            self._offsets[name] = path.stat().st_size if path.exists() else 0

    def poll(self) -> None:
        """Emits the summaries of every complete line appended since the last poll."""
        for name, path in self.files.items():
            try:
                with path.open("rb") as f:
                    f.seek(self._offsets[name])
                    chunk = f.read()
            except FileNotFoundError:
                continue
            complete = chunk.rfind(b"\n") + 1
            self._offsets[name] += complete
            for raw in chunk[:complete].splitlines():
                summary = summarize(raw.decode(errors="replace"), self.min_level)
                if summary is not None:
                    self._show(name, summary)

    def _show(self, name: str, summary: str) -> None:
        """Emits ``summary``, collapsing a run of identical ones (a service retrying a connection)."""
        repeats = self._repeats[name]
        now = time.monotonic()
        if summary == repeats.last:
            repeats.count += 1
            if now - repeats.since >= self.repeat_every:
                self.emit(name, f"{summary} (again, {_times(repeats.count)} since)")
                repeats.count, repeats.since = 0, now
            return
        self._flush(name)
        self.emit(name, summary)
        repeats.last, repeats.count, repeats.since = summary, 0, now

    def _flush(self, name: str) -> None:
        repeats = self._repeats[name]
        if repeats.count:
            self.emit(name, f"(the previous line came {_times(repeats.count)} more)")
            repeats.count = 0

    async def run(self, interval: float = 0.25) -> None:
        """Polls until cancelled, then reads what is left."""
        try:
            while True:
                self.poll()
                await asyncio.sleep(interval)
        finally:
            self.poll()
            for name in self.files:
                self._flush(name)


def _times(count: int) -> str:
    return "once" if count == 1 else f"{count} times"


@dataclass
class _Repeats:
    """The last summary shown for one service, and how often it came again since."""

    last: str = ""
    count: int = 0
    since: float = 0.0
