"""The fault suite: the whole system under load, with faults injected (see ``scenario.py``).

Each scenario prints a one-line figure; pytest's summary repeats them all.
"""

from __future__ import annotations

import pytest

from tests.faults.checks import FIGURES


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FIGURES:
        terminalreporter.section("fault suite figures")
        for line in FIGURES:
            terminalreporter.write_line(line)
