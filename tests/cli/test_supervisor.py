"""The supervisor with stand-in processes: readiness, restart after a crash, graceful and forced stop."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import time

import pytest

from choreoctl.stack.supervisor import RestartPolicy, Supervisor, describe_exit
from tests.cli.conftest import StandinFactory
from tests.support import eventually

FAST = RestartPolicy(
    initial_backoff=0.2, max_backoff=1.0, reset_after=30.0, stop_grace=5.0, probe_interval=0.05
)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class Recorder:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, name: str, message: str) -> None:
        self.lines.append(f"{name}: {message}")


async def test_starts_waits_ready_and_stops_gracefully(standin: StandinFactory) -> None:
    report = Recorder()
    supervisor = Supervisor([standin("a"), standin("b")], FAST, report)
    supervisor.start()
    try:
        assert await supervisor.wait_ready(15) == []
        pids = [p.pid for p in supervisor.processes.values()]
        assert all(pid is not None and pid_alive(pid) for pid in pids)
    finally:
        codes = await supervisor.stop()
    assert codes == {"a": 0, "b": 0}
    assert any(line.startswith("a: ready (pid") for line in report.lines)
    # The stand-in logged "stopping" from its SIGTERM handler: the stop was graceful, not a kill.
    assert "stopping" in supervisor.processes["a"].spec.log_file.read_text()


async def test_restarts_a_killed_process(standin: StandinFactory) -> None:
    report = Recorder()
    supervisor = Supervisor([standin("a")], FAST, report)
    supervisor.start()
    process = supervisor.processes["a"]
    try:
        assert await supervisor.wait_ready(15) == []
        first = process.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        await eventually(lambda: process.starts == 2 and process.ready.is_set(), timeout=15)
        assert process.pid not in (None, first)
    finally:
        await supervisor.stop()
    assert process.exit_codes == [-signal.SIGKILL, 0]
    assert "a: killed by SIGKILL; restarting in 0.2s" in report.lines
    log = process.spec.log_file.read_text()
    assert '"killed by SIGKILL after' in log, "the restart is recorded in the service's log"


async def test_crash_loop_backs_off_and_stops_promptly(standin: StandinFactory) -> None:
    report = Recorder()
    supervisor = Supervisor([standin("c", "crash")], FAST, report)
    supervisor.start()
    process = supervisor.processes["c"]
    await eventually(lambda: len(process.exit_codes) >= 3, timeout=15)
    assert set(process.exit_codes) == {3}
    delays = [line.rsplit(" ", 1)[-1] for line in report.lines if "restarting in" in line]
    assert delays[:3] == ["0.2s", "0.4s", "0.8s"], "the delay doubles"
    assert await supervisor.wait_ready(0.2) == ["c"]
    started = time.monotonic()
    await supervisor.stop()
    assert time.monotonic() - started < 2, "a stop during the backoff does not wait for it"


async def test_sigkill_after_grace_when_sigterm_is_ignored(standin: StandinFactory) -> None:
    report = Recorder()
    policy = RestartPolicy(initial_backoff=0.2, stop_grace=0.5, probe_interval=0.05)
    supervisor = Supervisor([standin("stubborn", "ignore-term")], policy, report)
    supervisor.start()
    assert await supervisor.wait_ready(15) == []
    codes = await supervisor.stop()
    assert codes == {"stubborn": -signal.SIGKILL}
    assert any(line.startswith("stubborn: did not stop within") for line in report.lines)


async def test_not_ready_is_reported(standin: StandinFactory) -> None:
    supervisor = Supervisor([standin("ok"), standin("slow", "never-ready")], FAST, Recorder())
    supervisor.start()
    try:
        assert await supervisor.wait_ready(1.5) == ["slow"]
        assert supervisor.processes["slow"].pid is not None, "not ready, but running"
    finally:
        await supervisor.stop()


async def test_a_command_that_cannot_start_is_retried(standin: StandinFactory) -> None:
    report = Recorder()
    spec = dataclasses.replace(standin("missing"), argv=["/nonexistent/binary"])
    supervisor = Supervisor([spec], FAST, report)
    supervisor.start()
    await eventually(lambda: sum("could not start" in line for line in report.lines) >= 2, timeout=15)
    await supervisor.stop()


@pytest.mark.parametrize(("code", "text"), [(0, "exit 0"), (3, "exit 3"), (-9, "killed by SIGKILL")])
def test_describe_exit(code: int, text: str) -> None:
    assert describe_exit(code) == text


async def test_a_configuration_error_is_not_restarted(standin: StandinFactory) -> None:
    """Exit 78 (EX_CONFIG): a restart cannot fix it, so no crash loop, and no waiting for readiness."""
    report = Recorder()
    supervisor = Supervisor([standin("bad", "config-error"), standin("good")], FAST, report)
    supervisor.start()
    try:
        started = time.monotonic()
        assert "bad" in await supervisor.wait_ready(30)
        assert time.monotonic() - started < 10, "wait_ready stopped waiting when it gave up"
        await asyncio.sleep(1.5)  # several restart backoffs of FAST
        assert supervisor.processes["bad"].starts == 1
        assert supervisor.gave_up() == ["bad"]
    finally:
        codes = await supervisor.stop()
    assert codes == {"bad": 78, "good": 0}
    assert "bad: exit 78: its configuration must be fixed; not restarting" in report.lines
