"""Helpers of the ``choreo`` CLI tests."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from choreoctl.stack.ports import free_port
from choreoctl.stack.supervisor import ProcessSpec

STANDIN = Path(__file__).with_name("standin_service.py")

StandinFactory = Callable[..., ProcessSpec]


@pytest.fixture
def standin(tmp_path: Path) -> StandinFactory:
    """Makes the spec of a stand-in service on a free port (see standin_service.py)."""

    def make(name: str, mode: str = "normal") -> ProcessSpec:
        port = free_port()
        return ProcessSpec(
            name=name,
            argv=[sys.executable, str(STANDIN), str(port), mode],
            env={"PATH": "/usr/bin:/bin"},
            log_file=tmp_path / "logs" / f"{name}.log",
            ready_url=f"http://127.0.0.1:{port}/readyz",
        )

    return make
