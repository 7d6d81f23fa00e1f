"""``python -m tests.notification.latency [N]``: time from ``BookingCreated`` to the email accepted
by the SMTP server, at low load (one booking at a time), for the issue's closing note.

A real nats-server, the notification service in-process on SQLite, and the tests'
recording SMTP server (aiosmtpd) on 127.0.0.1, plain SMTP: the time measured is
notification's own (consume, remember, compose, SMTP session), not a mail relay's.
Prints p50/p95/max over N bookings (default 50).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import nats

from choreo.bus import ensure_stream
from choreoctl.stack.natsserver import NatsServer
from notification.build import build
from notification.settings import NotificationSettings
from tests.notification.facts import created
from tests.notification.smtpserver import Recorder, SmtpServer
from tests.streams import BOOKING
from tests.support import eventually, publish


class StampingRecorder(Recorder):
    """Notes when each message's DATA is accepted, by booking id."""

    def __init__(self) -> None:
        super().__init__()
        self.accepted_at: dict[str, float] = {}

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        reply = await super().handle_DATA(server, session, envelope)
        self.accepted_at[self.received[-1].message["X-Choreo-Booking-Id"]] = time.time()
        return reply


def accepted(recorder: StampingRecorder, booking: str) -> bool:
    return booking in recorder.accepted_at


async def measure(n: int) -> list[float]:
    with tempfile.TemporaryDirectory() as folder:
        nats_server = NatsServer(Path(folder) / "js")
        nats_server.start()
        smtp = SmtpServer()
        recorder = StampingRecorder()
        smtp.recorder = recorder
        smtp.start()
        try:
            nc = await nats.connect(nats_server.url)
            js = nc.jetstream()
            await ensure_stream(js, BOOKING)
            settings = NotificationSettings(
                nats_url=nats_server.url,
                database_url=f"sqlite+aiosqlite:///{folder}/n.db",
                health_port=0,
                smtp_host=smtp.host,
                smtp_port=smtp.port,
                smtp_security="none",
                log_level="WARNING",
                sqlite_synchronous=os.environ.get("SYNC", "FULL"),
            )
            service = await build(settings)
            await service.start()
            latencies = []
            try:
                for i in range(n):
                    booking = f"lat-{i}"
                    started = time.time()
                    await publish(js, created(booking, f"u{i}@example.com"))
                    await eventually(partial(accepted, recorder, booking), timeout=10, interval=0.001)
                    latencies.append((recorder.accepted_at[booking] - started) * 1000)
                    await asyncio.sleep(0.05)  # low load: one booking at a time
            finally:
                await service.stop(grace=5)
                await nc.close()
            return latencies
        finally:
            smtp.stop()
            nats_server.kill()


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    ms = sorted(asyncio.run(measure(n)))
    p95 = ms[min(len(ms) - 1, int(len(ms) * 0.95))]
    print(f"BookingCreated -> email accepted by SMTP, {n} bookings one at a time:")
    print(f"  p50 {statistics.median(ms):.1f} ms, p95 {p95:.1f} ms, max {ms[-1]:.1f} ms")


if __name__ == "__main__":
    main()
