"""The fault suite: the whole system under load with faults injected (marker ``faults``).

Each scenario starts its own nats-server, databases and service processes
(``system.py``), runs a bounded load of bookings (``load.py``) while it injects
its faults (``inject.py``), then checks the invariants (``checks.py``) and
prints a one-line figure; pytest's summary repeats every figure. Run only this
suite with ``python -m pytest -m faults``, everything else with ``-m "not faults"``.
"""

from __future__ import annotations

import pytest

from tests.faults.checks import FIGURES


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FIGURES:
        terminalreporter.section("fault suite figures")
        for line in FIGURES:
            terminalreporter.write_line(line)
