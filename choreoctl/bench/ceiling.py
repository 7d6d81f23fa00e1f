"""The raw messaging ceiling: a booking's hops with nats-py alone, in three processes.

``run_ceiling`` provisions a private pair of streams (same storage settings as
choreo's), starts the ``booking``, ``payment`` and ``gateway`` workers of
``choreoctl.bench.ceiling_worker``, lets the gateway worker drive the load, samples
the CPU and memory of every process around the measurement window, and removes
its streams afterwards, so it can run against a live system's server.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import sys
import tempfile
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from booking.topology import STREAM as BOOKING_STREAM
from choreo import natsclient
from choreo.bus import stream_config
from choreo.natsidentity import tool_inbox
from choreoctl.bench.ceiling_worker import DURABLES, CeilingNames
from choreoctl.bench.driver import LoadSpec
from choreoctl.bench.procstats import (
    ProcSample,
    machine_cores_used,
    process_costs,
    read_busy_cpu_s,
    sample_all,
)
from payment.topology import STREAM as PAYMENT_STREAM


class CeilingError(RuntimeError):
    """A ceiling worker failed."""


async def _provision(nats_url: str, names: CeilingNames, batch_size: int) -> None:
    nc = await natsclient.connect(nats_url, name="ceiling-setup", inbox_prefix=tool_inbox(nats_url, "bench"))
    try:
        js = nc.jetstream()
        for template, name, subjects in (
            (BOOKING_STREAM, names.booking_stream, names.booking_subjects),
            (PAYMENT_STREAM, names.payment_stream, names.payment_subjects),
        ):
            await js.add_stream(dataclasses.replace(stream_config(template), name=name, subjects=[subjects]))
        for stream, durable, subject in (
            (names.booking_stream, DURABLES["payment"], names.booking_created),
            (names.booking_stream, DURABLES["gateway"], names.booking_subjects),
            (names.payment_stream, DURABLES["booking"], names.payment_subjects),
        ):
            # The same consumer settings as choreo.consumer.EventConsumer.
            await js.add_consumer(
                stream,
                ConsumerConfig(
                    durable_name=durable,
                    deliver_policy=DeliverPolicy.ALL,
                    ack_policy=AckPolicy.EXPLICIT,
                    ack_wait=30.0,
                    max_deliver=-1,
                    filter_subjects=[subject],
                    max_ack_pending=max(1000, batch_size * 4),
                ),
            )
    finally:
        await nc.close()


async def _remove(nats_url: str, names: CeilingNames) -> None:
    nc = await natsclient.connect(
        nats_url, name="ceiling-teardown", inbox_prefix=tool_inbox(nats_url, "bench")
    )
    try:
        js = nc.jetstream()
        for stream in (names.booking_stream, names.payment_stream):
            with contextlib.suppress(Exception):
                await js.delete_stream(stream)
    finally:
        await nc.close()


class _Worker:
    """One worker process, spoken to by lines on stdin/stdout."""

    def __init__(self, role: str, process: asyncio.subprocess.Process, log: Path) -> None:
        self.role = role
        self.process = process
        self.log = log

    @classmethod
    async def start(cls, role: str, args: list[str], log_dir: Path) -> _Worker:
        log = log_dir / f"ceiling-{role}.log"
        with log.open("wb") as stderr:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "choreoctl.bench.ceiling_worker",
                "--role",
                role,
                *args,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr,
            )
        return cls(role, process, log)

    async def line(self, timeout: float) -> str:
        assert self.process.stdout is not None
        raw = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        if not raw:
            await self.process.wait()
            tail = self.log.read_text(errors="replace")[-2000:]
            raise CeilingError(f"ceiling {self.role} exited with {self.process.returncode}: {tail}")
        return raw.decode().strip()

    async def expect(self, word: str, timeout: float) -> str:
        line = await self.line(timeout)
        if not line.startswith(word):
            raise CeilingError(f"ceiling {self.role} said {line!r}, expected {word!r}")
        return line

    async def stop(self, timeout: float = 10.0) -> None:
        if self.process.returncode is not None:
            return
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


async def run_ceiling(
    nats_url: str,
    spec: LoadSpec,
    *,
    batch_size: int = 256,
    other_pids: Mapping[str, int] | None = None,
    log_dir: Path | None = None,
) -> dict[str, Any]:
    """Runs the ceiling pipeline under ``spec`` and returns its figures.

    Args:
        nats_url: A JetStream-enabled server (the one the system uses, for a fair ratio).
        spec: The load, applied by the gateway worker.
        batch_size: Events per fetch, as the services' ``BATCH_SIZE``.
        other_pids: More processes to sample (e.g. ``{"nats-server": pid}``).
        log_dir: Where the workers' stderr goes (a temporary folder by default).

    Returns:
        The load figures (``choreoctl.bench.driver.LoadResult.to_dict``) plus
        ``processes``: CPU and memory of each worker and of ``other_pids``.
    """
    names = CeilingNames(uuid.uuid4().hex[:8])
    with contextlib.ExitStack() as stack:
        if log_dir is None:
            log_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="choreo-ceiling-")))
        await _provision(nats_url, names, batch_size)
        common = ["--nats-url", nats_url, "--run-id", names.run_id, "--batch-size", str(batch_size)]
        workers: list[_Worker] = []
        try:
            for role in ("booking", "payment"):
                workers.append(await _Worker.start(role, common, log_dir))
            for worker in workers:
                await worker.expect("ready", 30.0)
            load_args = [
                *common,
                *("--mode", spec.mode, "--duration", str(spec.duration), "--warmup", str(spec.warmup)),
                *("--concurrency", str(spec.concurrency), "--rate", str(spec.rate)),
            ]
            gateway = await _Worker.start("gateway", load_args, log_dir)
            workers.append(gateway)
            await gateway.expect("ready", 30.0)
            pids = {f"ceiling-{w.role}": w.process.pid for w in workers} | dict(other_pids or {})
            before: dict[str, ProcSample] = {}
            after: dict[str, ProcSample] = {}
            result: dict[str, Any] | None = None
            busy: list[float] = []
            timeout = spec.warmup + spec.duration + 120.0
            while result is None:
                line = await gateway.line(timeout)
                if line == "window-start":
                    before = sample_all(pids)
                    busy.append(read_busy_cpu_s())
                elif line == "window-end":
                    after = sample_all(pids)
                    busy.append(read_busy_cpu_s())
                elif line.startswith("result "):
                    result = json.loads(line[len("result ") :])
        finally:
            for worker in reversed(workers):
                await worker.stop()
            await _remove(nats_url, names)
    costs = process_costs(before, after, result["completed_in_window"], spec.duration)
    result["processes"] = costs
    if len(busy) == 2:
        machine = machine_cores_used(busy[0], busy[1], spec.duration)
        result["machine_cores_busy"] = round(machine, 3)
        result["other_cores_busy"] = round(
            max(0.0, machine - sum(c["cores"] or 0.0 for c in costs.values())), 3
        )
    return result
