"""The gateway's memory under abuse: big bodies, slowloris sockets, thousands of watches.

Starts its own nats-server and a gateway process (``GATEWAY_AUTH=none``, every
other setting at its default unless given below) on free ports, and measures the
gateway's resident memory (RSS, sampled every 50 ms) in four phases:

- idle, once ready;
- ``--bodies`` concurrent POSTs of ``--body-mib`` MiB each, half with a
  ``Content-Length``, half chunked (answered 413 at 16 KiB, the connection closed);
- ``--slow-sockets`` connections trickling a header line each second (slowloris),
  with a ``/healthz`` request during the attack: how many are still open after
  ``--slow-seconds``;
- ``--watches`` gRPC WatchBooking streams on one booking: how many are accepted.

Prints one row per phase: RSS before, peak and after (MB), and what happened.
The gateway's pod limit in k8s/base is the bound the figures are read against.

Usage: python scripts/gateway_memory.py [--bodies 8] [--body-mib 100] [--slow-sockets 900] ...
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx

from booking.topology import STREAM as BOOKING
from choreo import natsclient
from choreo.booking.v1 import events_pb2
from choreo.bus import ensure_stream
from choreo.clock import to_timestamp
from choreo.contract import fact_subject
from choreo.db import now_us
from choreo.dlq import DLQ
from choreo.envelope import Envelope
from choreo.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from choreoctl.bench.procstats import read_sample
from choreoctl.stack.natsserver import NatsServer
from choreoctl.stack.ports import free_port
from payment.topology import STREAM as PAYMENT

ROOT = Path(__file__).resolve().parent.parent
#: Watches opened at once: thousands started in one go make the grpc.aio *client* cancel some.
_WATCH_BATCH = 250
MB = 1024


@dataclass
class Row:
    phase: str
    before_mb: float
    peak_mb: float
    after_mb: float
    result: str


class Sampler:
    """Samples one process's RSS every ``interval`` seconds while running."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_kb = 0

    def rss_kb(self) -> int:
        sample = read_sample(self.pid)
        if sample is None:
            raise RuntimeError("the gateway exited")
        return sample.rss_kb

    @contextlib.asynccontextmanager
    async def sampling(self) -> AsyncIterator[None]:
        self.peak_kb = self.rss_kb()

        async def run() -> None:
            while True:
                self.peak_kb = max(self.peak_kb, self.rss_kb())
                await asyncio.sleep(self.interval)

        task = asyncio.create_task(run())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self.peak_kb = max(self.peak_kb, self.rss_kb())


async def phase(sampler: Sampler, name: str, work: Callable[[], Awaitable[str]], settle: float) -> Row:
    before = sampler.rss_kb()
    async with sampler.sampling():
        result = await work()
    await asyncio.sleep(settle)
    return Row(name, before / MB, sampler.peak_kb / MB, sampler.rss_kb() / MB, result)


async def big_post(port: int, mib: int, chunked: bool) -> tuple[int, int]:
    """Streams a ``mib`` MiB body; returns the status the gateway answered (0: none read) and bytes sent.

    The client reads while it sends; it may see the connection reset (the gateway
    closes it with the rest of the body unread) before it reads the 413.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    framing = b"Transfer-Encoding: chunked" if chunked else b"Content-Length: %d" % (mib << 20)
    writer.write(
        b"POST /v1/bookings HTTP/1.1\r\nHost: g\r\nContent-Type: application/json\r\n%s\r\n\r\n" % framing
    )
    piece = b" " * 65536
    chunk = b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece
    answer = asyncio.create_task(reader.readline())
    sent = 0
    try:
        for _ in range((mib << 20) // len(piece)):
            if answer.done():
                break
            writer.write(chunk)
            await writer.drain()
            sent += len(piece)
    except ConnectionError:
        pass  # the gateway closed the connection after answering
    try:
        line = await asyncio.wait_for(answer, 10)
    except (TimeoutError, ConnectionError):
        return 0, sent
    finally:
        writer.close()
    return (int(line.split()[1]) if line.startswith(b"HTTP/") else 0), sent


async def bodies_phase(port: int, count: int, mib: int) -> str:
    results = await asyncio.gather(*(big_post(port, mib, chunked=i % 2 == 1) for i in range(count)))
    answered = sum(status == 413 for status, _ in results)
    sent = max((sent for _, sent in results), default=0) / (1 << 20)
    return (
        f"{answered} of {count} POSTs of {mib} MiB read a 413, the rest saw the connection reset;"
        f" at most {sent:.1f} MiB sent"
    )


async def slowloris_phase(port: int, sockets: int, seconds: float) -> str:
    conns = []
    for _ in range(sockets):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /v1/bookings HTTP/1.1\r\nHost: g\r\n")
        conns.append((reader, writer))
    started = time.monotonic()
    healthz = ""
    line = 0
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
        while time.monotonic() - started < seconds:
            await asyncio.sleep(1)
            line += 1
            for _, writer in conns:
                if not writer.is_closing():
                    with contextlib.suppress(ConnectionError):
                        writer.write(b"X-Slow-%d: x\r\n" % line)
            if not healthz and time.monotonic() - started > 2:
                try:
                    healthz = str((await http.get("/healthz")).status_code)
                except httpx.HTTPError as exc:
                    healthz = type(exc).__name__
    # The gateway closing a connection shows as end of file (or a reset) on the client's side.
    still_open = sum(not (r.at_eof() or r.exception() or w.is_closing()) for r, w in conns)
    for _, writer in conns:
        writer.close()
    return f"{still_open} of {sockets} open after {seconds:g} s; /healthz during: {healthz}"


async def watches_phase(grpc_port: int, http_port: int, nc_url: str, count: int, hold: float) -> str:
    nc = await natsclient.connect(nc_url)
    booking_id = f"mem-{os.getpid()}"
    created = events_pb2.BookingCreated(
        booking_id=booking_id,
        user_id="u1",
        amount_cents=100,
        currency="EUR",
        payment_token="tok_visa",
        created_at=to_timestamp(now_us()),
    )
    env = Envelope.wrap(
        created, source="booking", subject=fact_subject(events_pb2.BookingCreated), correlation_id=booking_id
    )
    await nc.jetstream().publish(env.subject, env.data, headers=env.headers())
    await nc.close()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}") as http:
        for _ in range(300):  # the projection brings it in within milliseconds
            if (await http.get(f"/v1/bookings/{booking_id}")).status_code == 200:
                break
            await asyncio.sleep(0.1)
    # 500 watches per connection (own subchannel pools: channels to one target share a connection by default).
    options = [("grpc.use_local_subchannel_pool", 1)]
    channels = [
        grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}", options=options)
        for _ in range(max(1, count // 500))
    ]
    calls: list[Any] = []
    refused: dict[str, int] = {}

    async def watch(i: int) -> bool:
        stub: Any = gateway_pb2_grpc.BookingGatewayServiceStub(channels[i % len(channels)])
        call = stub.WatchBooking(gateway_pb2.WatchBookingRequest(booking_id=booking_id))
        calls.append(call)
        try:
            # Cancelled by the timeout, a call raises CANCELLED: count it as unanswered.
            await asyncio.wait_for(call.read(), answer_timeout)
        except (grpc.aio.AioRpcError, TimeoutError) as exc:
            late = time.monotonic() - started >= answer_timeout
            why = "no answer" if late else exc.code().name if isinstance(exc, grpc.aio.AioRpcError) else "?"
            refused[why] = refused.get(why, 0) + 1
            return False
        return True

    answer_timeout = 30.0
    started = time.monotonic()
    try:
        accepted = 0
        for first in range(0, count, _WATCH_BATCH):
            batch = range(first, min(count, first + _WATCH_BATCH))
            accepted += sum(await asyncio.gather(*(watch(i) for i in batch)))
        took = time.monotonic() - started
        await asyncio.sleep(hold)  # held open, while sampled
    finally:
        for call in calls:
            call.cancel()
        for channel in channels:
            await channel.close(None)
    why = ", ".join(f"{n} {code}" for code, n in sorted(refused.items()))
    refusals = f" (refused: {why})" if why else ""
    return f"{accepted} of {count} watches accepted in {took:.1f} s{refusals}"


async def wait_ready(port: int, process: asyncio.subprocess.Process, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        while time.monotonic() < deadline:
            if process.returncode is not None:
                raise RuntimeError(f"the gateway exited with {process.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get("/readyz")).status_code == 200:
                    return
            await asyncio.sleep(0.2)
    raise RuntimeError("the gateway did not become ready")


async def run(options: argparse.Namespace, workdir: Path) -> list[Row]:
    nats = NatsServer(workdir / "jetstream")
    url = nats.start()
    try:
        nc = await natsclient.connect(url)
        for stream in (BOOKING, PAYMENT, DLQ):
            await ensure_stream(nc.jetstream(), stream)
        await nc.close()
        grpc_port, http_port = free_port(), free_port()
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "GATEWAY_AUTH": "none",
            "GATEWAY_NATS_URL": url,
            "GATEWAY_DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'gateway.db'}",
            "GATEWAY_HOST": "127.0.0.1",
            "GATEWAY_GRPC_PORT": str(grpc_port),
            "GATEWAY_HTTP_PORT": str(http_port),
            "GATEWAY_LOG_LEVEL": "WARNING",
            "GATEWAY_LOG_FORMAT": "text",
            **dict(item.split("=", 1) for item in options.env),
        }
        with (workdir / "gateway.log").open("wb") as log:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "gateway", env=env, stdout=log, stderr=log, cwd=ROOT
            )
        try:
            await wait_ready(http_port, process)
            sampler = Sampler(process.pid)
            await asyncio.sleep(2)
            idle = sampler.rss_kb() / MB
            rows = [Row("idle", idle, idle, idle, "ready")]
            rows.append(
                await phase(
                    sampler,
                    "big bodies",
                    lambda: bodies_phase(http_port, options.bodies, options.body_mib),
                    2,
                )
            )
            rows.append(
                await phase(
                    sampler,
                    "slowloris",
                    lambda: slowloris_phase(http_port, options.slow_sockets, options.slow_seconds),
                    2,
                )
            )
            rows.append(
                await phase(
                    sampler,
                    "watches",
                    lambda: watches_phase(grpc_port, http_port, url, options.watches, options.hold),
                    2,
                )
            )
            return rows
        finally:
            process.terminate()
            await asyncio.wait_for(process.wait(), 30)
    finally:
        nats.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bodies", type=int, default=8, help="concurrent big POSTs (default 8)")
    parser.add_argument(
        "--body-mib", type=int, default=100, help="size of each big body in MiB (default 100)"
    )
    parser.add_argument("--slow-sockets", type=int, default=900, help="slowloris connections (default 900)")
    parser.add_argument(
        "--slow-seconds",
        type=float,
        default=15.0,
        help="how long they trickle, then are counted (default 15)",
    )
    parser.add_argument("--watches", type=int, default=5000, help="gRPC watches opened (default 5000)")
    parser.add_argument(
        "--hold", type=float, default=3.0, help="seconds the watches are held open (default 3)"
    )
    parser.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE", help="a gateway setting (repeatable)"
    )
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gateway-memory-") as workdir:
        rows = asyncio.run(run(options, Path(workdir)))
    print(f"{'phase':<12} {'RSS before MB':>13} {'peak MB':>8} {'after MB':>9}  result")
    for row in rows:
        print(
            f"{row.phase:<12} {row.before_mb:>13.0f} {row.peak_mb:>8.0f} {row.after_mb:>9.0f}  {row.result}"
        )


if __name__ == "__main__":
    main()
