"""``choreo dlq``: a dead letter is listed with its cause, and a re-drive gets it handled."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from nats.js import JetStreamContext

from choreo.booking.v1 import events_pb2 as booking_events
from choreo.dlq_cli import read_dead_letters, redrive
from choreo.envelope import Envelope
from choreo.handler import HandlerContext, Route
from choreo.natsserver import NatsServer
from choreo.runtime import open_runtime
from choreo.settings import ServiceSettings
from tests.support import eventually, stream_count


async def choreo_cli(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "choreo"),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    return int(proc.returncode or 0), out.decode()


async def test_a_dead_letter_is_listed_then_redriven_and_handled(
    nats_server: NatsServer, js: JetStreamContext, tmp_path: Path
) -> None:
    settings = ServiceSettings(
        service_name="reader",
        nats_url=nats_server.url,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'reader.db'}",
        max_deliveries=1,
        log_format="text",
    )
    rt = await open_runtime(settings, own_stream="BOOKING", migrations=None)
    broken = True
    handled: list[tuple[str, str]] = []

    async def handle(event: booking_events.BookingCreated, ctx: HandlerContext) -> None:
        if broken:
            raise RuntimeError("the database said no")
        handled.append((event.booking_id, ctx.envelope.id))

    consumer = rt.consumer(
        stream="BOOKING",
        durable="reader",
        subjects=["booking.created"],
        routes=[Route(booking_events.BookingCreated, handle)],
    )
    service = rt.service([consumer])
    await service.start()
    try:
        env = Envelope.wrap(
            booking_events.BookingCreated(booking_id="b-1"),
            source="booking",
            subject="booking.created",
            correlation_id="wf-1",
        )
        await js.publish(env.subject, env.data, headers=env.headers())
        await eventually(lambda: stream_count(js, "DLQ"))

        code, out = await choreo_cli("dlq", "--nats-url", nats_server.url, "list")
        assert code == 0, out
        assert "BOOKING#1 booking.created" in out and "consumer=reader" in out
        assert "the database said no" in out and env.id in out

        [letter] = await read_dead_letters(nats_server.url, 10)
        original = letter.original_headers()
        assert original["ce-id"] == env.id and original["Nats-Msg-Id"] == env.id
        assert "Nats-Expected-Stream" not in original, "the copy's own headers are not the original's"

        broken = False  # the fix is deployed
        lines = await redrive(nats_server.url, [letter.sequence, 999])
        assert any("-> booking.created" in line for line in lines)
        assert any(line == "DLQ #999: not found" for line in lines)
        await eventually(lambda: _handled(handled))
    finally:
        await service.stop(grace=5)
    assert handled == [("b-1", env.id)], "handled once, under its original event id"
    assert await read_dead_letters(nats_server.url, 10) == []
    code, out = await choreo_cli("dlq", "--nats-url", nats_server.url, "list")
    assert (code, out.strip()) == (0, "the DLQ is empty")


async def _handled(handled: list[tuple[str, str]]) -> bool:
    return bool(handled)
