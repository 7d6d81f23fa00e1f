"""Runs service processes, restarts the ones that die, and stops them gracefully.

This is what ``choreo up`` does locally in place of Kubernetes: each service is
an ordinary child process (its own session, so a Ctrl-C in the terminal reaches
only the supervisor, which then stops the children in order); its output goes
straight to a log file, so logs survive the supervisor; readiness is an HTTP
probe; a process that exits is restarted after an exponential backoff that is
reset once the process has stayed up for a while (Kubernetes' CrashLoopBackOff,
scaled down to local use).

Liveness is deliberately *not* probed: the services' health endpoints fail
while NATS is unreachable, and restarting every service during a NATS outage
would only add work to the recovery (they reconnect on their own).

A process that exits with ``os.EX_CONFIG`` (78) said that its configuration is
wrong in a way no restart fixes (a database that does not exist, see
``choreo.service.run_main``): it is not restarted, and ``wait_ready`` stops
waiting for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from choreo.retry import Backoff

#: Receives one human-readable line per lifecycle event: (service name, message).
Reporter = Callable[[str, str], None]


@dataclass(frozen=True)
class ProcessSpec:
    """How to run one service.

    Attributes:
        name: Service name (console, log lines).
        argv: Command line.
        env: Complete environment of the process.
        log_file: Receives the process's stdout and stderr (appended).
        ready_url: Answers HTTP 200 once the process is ready; ``None`` means
            ready as soon as it runs.
        cwd: Working directory (default: the supervisor's).
    """

    name: str
    argv: Sequence[str]
    env: Mapping[str, str]
    log_file: Path
    ready_url: str | None = None
    cwd: Path | None = None


@dataclass(frozen=True)
class RestartPolicy:
    """Timings of restarts and stops.

    Attributes:
        initial_backoff: Delay before the first restart after a crash.
        max_backoff: Upper bound of the doubling delay.
        reset_after: Seconds of uptime after which the next crash counts as the first.
        stop_grace: Seconds between SIGTERM and SIGKILL on stop.
        probe_interval: Seconds between readiness probes.
        final_exit_codes: Exit statuses after which the process is not restarted.
    """

    initial_backoff: float = 1.0
    max_backoff: float = 30.0
    reset_after: float = 30.0
    stop_grace: float = 15.0
    probe_interval: float = 0.1
    final_exit_codes: tuple[int, ...] = (os.EX_CONFIG,)


def describe_exit(returncode: int) -> str:
    """``exit 3`` or ``killed by SIGKILL``."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit {returncode}"


async def probe(client: httpx.AsyncClient, url: str) -> bool:
    """True when ``url`` answers 200."""
    try:
        response = await client.get(url)
    except httpx.HTTPError:
        return False
    return response.status_code == 200


@dataclass
class SupervisedProcess:
    """One service kept running until ``stop``.

    Attributes:
        spec: What to run.
        policy: Restart and stop timings.
        report: Where lifecycle events are told.
        pid: Current process id (``None`` between runs).
        starts: How many times the process was started.
        ready: Set while the current run has passed its readiness probe.
        exit_codes: Return code of every finished run, in order.
        gave_up: Set when the process exited with one of the policy's final exit codes.
    """

    spec: ProcessSpec
    policy: RestartPolicy
    report: Reporter
    pid: int | None = None
    starts: int = 0
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    exit_codes: list[int] = field(default_factory=list)
    gave_up: asyncio.Event = field(default_factory=asyncio.Event)
    _process: asyncio.subprocess.Process | None = None
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def name(self) -> str:
        return self.spec.name

    async def run(self) -> None:
        """Starts the process and restarts it whenever it exits, until ``stop`` is called.

        This task alone owns the process, so a stop that arrives while the
        process is being spawned or restarted cannot leave one behind.
        """
        restarts = Backoff(self.policy.initial_backoff, self.policy.max_backoff).start()
        async with httpx.AsyncClient(timeout=1.0) as client:
            while not self._stopping.is_set():
                started = time.monotonic()
                returncode: int | None = None
                spawn_error: OSError | None = None
                try:
                    process = await self._spawn()
                except OSError as exc:
                    spawn_error = exc
                else:
                    returncode = await self._supervise_run(process, client, started)
                if self._stopping.is_set():
                    return
                if returncode in self.policy.final_exit_codes:
                    message = f"{describe_exit(returncode)}: its configuration must be fixed; not restarting"
                    self._log_line("ERROR", message)
                    self.report(self.name, message)
                    self.gave_up.set()
                    return
                uptime = time.monotonic() - started
                if uptime >= self.policy.reset_after:
                    restarts.reset()
                delay = restarts.next()
                if returncode is None:
                    self.report(self.name, f"could not start: {spawn_error}; retrying in {delay:.1f}s")
                else:
                    self._log_line("WARNING", f"{describe_exit(returncode)} after {uptime:.1f}s; restarting")
                    self.report(self.name, f"{describe_exit(returncode)}; restarting in {delay:.1f}s")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)

    async def _supervise_run(
        self, process: asyncio.subprocess.Process, client: httpx.AsyncClient, started: float
    ) -> int:
        """Waits for the process to exit, or stops it when asked; returns its return code."""
        prober = asyncio.create_task(self._await_ready(client, started))
        exited = asyncio.create_task(process.wait())
        stopping = asyncio.create_task(self._stopping.wait())
        await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        prober.cancel()
        await asyncio.gather(prober, stopping, return_exceptions=True)
        self.ready.clear()
        if not exited.done():
            await self._terminate(process)
        returncode = await exited
        self.pid = None
        self.exit_codes.append(returncode)
        return returncode

    async def _terminate(self, process: asyncio.subprocess.Process) -> None:
        """SIGTERM, then SIGKILL after the grace period."""
        self._signal(process, signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), self.policy.stop_grace)
        except TimeoutError:
            self.report(self.name, f"did not stop within {self.policy.stop_grace:.0f}s; sending SIGKILL")
            self._signal(process, signal.SIGKILL)
            await process.wait()

    async def _spawn(self) -> asyncio.subprocess.Process:
        self.spec.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        with self.spec.log_file.open("ab") as log:
            process = await asyncio.create_subprocess_exec(
                *self.spec.argv,
                env=dict(self.spec.env),
                cwd=self.spec.cwd,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                # Own session: the terminal's Ctrl-C must reach only the supervisor,
                # which then stops the services in order.
                start_new_session=True,
            )
        self._process = process
        self.pid = process.pid
        self._log_line("INFO", f"started pid {process.pid} (start #{self.starts})")
        self.report(self.name, f"started (pid {process.pid})")
        return process

    async def _await_ready(self, client: httpx.AsyncClient, started: float) -> None:
        if self.spec.ready_url is not None:
            # Another process's readiness can only be observed by asking again.
            while not await probe(client, self.spec.ready_url):  # noqa: ASYNC110
                await asyncio.sleep(self.policy.probe_interval)
        self.ready.set()
        self.report(self.name, f"ready (pid {self.pid}, {time.monotonic() - started:.1f}s)")

    def _log_line(self, level: str, message: str) -> None:
        """Appends the supervisor's own note to the service's log, in the same JSON-lines format."""
        now = time.time()
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z",
            "level": level,
            "service": self.name,
            "logger": "choreo.supervisor",
            "msg": message,
        }
        with self.spec.log_file.open("a") as log:
            log.write(json.dumps(entry) + "\n")

    def stop(self) -> None:
        """Asks ``run`` to stop the process (SIGTERM, then SIGKILL after the grace period) and return."""
        self._stopping.set()

    def kill_now(self) -> None:
        """SIGKILL without waiting (last-resort clean-up when the supervisor itself fails)."""
        self._stopping.set()
        if self._process is not None and self._process.returncode is None:
            self._signal(self._process, signal.SIGKILL)

    @staticmethod
    def _signal(process: asyncio.subprocess.Process, sig: signal.Signals) -> None:
        # The whole process group: a service's own children go with it.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)


class Supervisor:
    """Keeps a set of services running.

    Args:
        specs: The services, in start order.
        policy: Restart and stop timings.
        report: Where lifecycle events are told.
    """

    def __init__(self, specs: Sequence[ProcessSpec], policy: RestartPolicy, report: Reporter) -> None:
        self.processes = {spec.name: SupervisedProcess(spec, policy, report) for spec in specs}
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        """Starts every service in the background."""
        self._tasks = [
            asyncio.create_task(p.run(), name=f"supervise-{p.name}") for p in self.processes.values()
        ]

    async def wait_ready(self, limit: float) -> list[str]:
        """Waits up to ``limit`` seconds until every service is ready; returns those that are not.

        Stops waiting early when a service gave up (see ``gave_up``).
        """
        waits = {name: asyncio.create_task(p.ready.wait()) for name, p in self.processes.items()}
        gave_up = [asyncio.create_task(p.gave_up.wait()) for p in self.processes.values()]
        deadline = asyncio.get_running_loop().time() + limit
        pending = set(waits.values())
        while pending:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0 or any(task.done() for task in gave_up):
                break
            _, pending = await asyncio.wait(
                {*pending, *gave_up}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
            )
            pending -= set(gave_up)
        for task in [*waits.values(), *gave_up]:
            task.cancel()
        return [name for name, p in self.processes.items() if not p.ready.is_set()]

    def gave_up(self) -> list[str]:
        """The services that exited with a final exit code and are not restarted."""
        return [name for name, p in self.processes.items() if p.gave_up.is_set()]

    async def stop(self) -> dict[str, int | None]:
        """Stops every service at once (each drains on its own).

        Returns:
            Each service's last return code (``None`` if it never ran).
        """
        for process in self.processes.values():
            process.stop()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        return {name: (p.exit_codes[-1] if p.exit_codes else None) for name, p in self.processes.items()}

    def kill_now(self) -> None:
        """SIGKILLs every service (used when the supervisor cannot stop them in order)."""
        for process in self.processes.values():
            process.kill_now()
