"""The short human-readable account ``choreo up`` writes to the terminal.

The full story is in each service's JSON-lines log file; the console gets one
line per lifecycle event (started, ready, crashed, restarting, stopped) and per
warning or error a service logs.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Console:
    """Writes ``HH:MM:SS source  message`` lines, flushed at once.

    Args:
        stream: Where to write (default: standard output).
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout

    def event(self, source: str, message: str) -> None:
        """One timestamped line about ``source`` (a service, ``nats``, ``choreo``)."""
        self.stream.write(f"{time.strftime('%H:%M:%S')} {source:<8} {message}\n")
        self.stream.flush()

    def text(self, text: str = "") -> None:
        """Plain text (endpoint listings, tables)."""
        self.stream.write(text + "\n")
        self.stream.flush()
