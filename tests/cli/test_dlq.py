"""``choreo dlq``: a dead letter is listed with its cause, and a re-drive gets it handled."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from nats.js import JetStreamContext

from choreo.booking.v1 import events_pb2 as booking_events
from choreo.bus import ensure_stream
from choreo.dlq import H_ORIGINAL_SEQUENCE, H_ORIGINAL_SUBJECT, copy_to_dlq
from choreo.envelope import Envelope
from choreo.handler import HandlerContext, Route
from choreo.payment.v1 import events_pb2 as payment_events
from choreo.runtime import open_runtime
from choreo.settings import ConsumerSettings
from choreo.topology import Subscription, Topology
from choreoctl.ops.dlq import read_dead_letters, redrive
from choreoctl.stack.natsserver import NatsServer
from tests.streams import BOOKING, DLQ, PAYMENT
from tests.support import eventually, publish, stream_count, stream_envelopes


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
    settings = ConsumerSettings(
        service_name="reader",
        nats_url=nats_server.url,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'reader.db'}",
        max_deliveries=1,
        log_format="text",
    )
    broken = True
    handled: list[tuple[str, str]] = []

    async def handle(event: booking_events.BookingCreated, ctx: HandlerContext) -> None:
        if broken:
            raise RuntimeError("the database said no")
        handled.append((event.booking_id, ctx.envelope.id))

    reads = Subscription("reader", (Route(booking_events.BookingCreated, handle),))
    await ensure_stream(js, BOOKING)
    rt = await open_runtime(settings, Topology(service="reader", subscriptions=(reads,)), migrations=None)
    consumer = rt.consumer(reads)
    service = rt.service([consumer])
    await service.start()
    try:
        env = Envelope.wrap(
            booking_events.BookingCreated(booking_id="b-1"),
            source="booking",
            subject="booking.created",
            correlation_id="wf-1",
        )
        await publish(js, env)
        await eventually(lambda: stream_count(js, "DLQ"))

        code, out = await choreo_cli("dlq", "--nats-url", nats_server.url, "list")
        assert code == 0, out
        assert "BOOKING#1 booking.created" in out and "consumer=reader" in out
        assert "the database said no" in out and env.id in out

        [letter] = await read_dead_letters(nats_server.url, 10)
        assert (letter.event_id, letter.stream, letter.stream_sequence) == (env.id, "BOOKING", "1")

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


async def _dead_letter_from_payment(
    js: JetStreamContext, url: str, env: Envelope
) -> tuple[int, dict[str, str]]:
    """Publishes ``env`` to PAYMENT and dead-letters it as the gateway's projection would;
    returns its PAYMENT sequence and the DLQ copy's headers."""
    await ensure_stream(js, PAYMENT)
    await ensure_stream(js, DLQ)
    seq = await publish(js, env)
    sub = await js.pull_subscribe(env.subject, stream="PAYMENT")
    [msg] = await sub.fetch(1, timeout=5)
    await copy_to_dlq(js, msg, "gateway-projection", "could not read it")
    [letter] = [d for d in await read_dead_letters(url, 100) if d.stream_sequence == str(seq)]
    # Without the copy's de-duplication id, so the test can store variations of it.
    return seq, {k: v for k, v in letter.headers.items() if k != "Nats-Msg-Id"}


def _declined(booking_id: str) -> Envelope:
    return Envelope.wrap(
        payment_events.PaymentFailed(
            payment_id=f"p-{booking_id}", booking_id=booking_id, reason="card_declined"
        ),
        source="payment",
        subject="payment.failed",
        correlation_id=f"wf-{booking_id}",
    )


async def test_a_forged_dead_letter_is_refused_and_nothing_is_published(
    nats_server: NatsServer, js: JetStreamContext
) -> None:
    """The attack: a user allowed to dead-letter (the gateway, on dlq.payment.gateway-projection)
    writes an entry naming PAYMENT and ``payment.succeeded``; a re-drive must not publish it."""
    url = nats_server.url
    declined = _declined("b-1")
    seq, genuine = await _dead_letter_from_payment(js, url, declined)
    forged_fact = Envelope.wrap(
        payment_events.PaymentSucceeded(
            payment_id="p-b-1", booking_id="b-1", amount_cents=100, currency="EUR"
        ),
        source="payment",
        subject="payment.succeeded",
        correlation_id="wf-b-1",
    )
    forged_headers = {**genuine, **forged_fact.headers(), H_ORIGINAL_SUBJECT: "payment.succeeded"}
    forged_headers.pop("Nats-Msg-Id")  # the forged fact's own
    entries = {
        # Right DLQ subject and sequence, another fact: subject, ce-id and body differ.
        "forged fact": ("dlq.payment.gateway-projection", forged_headers, forged_fact.data),
        # The original's very bytes, but on a DLQ subject of another stream (payment's own).
        "other stream's DLQ subject": ("dlq.booking.payment", genuine, declined.data),
        # A sequence the stream does not hold.
        "gone": ("dlq.payment.gateway-projection", {**genuine, H_ORIGINAL_SEQUENCE: "99"}, declined.data),
        # The original's headers with another body.
        "other body": ("dlq.payment.gateway-projection", genuine, b"\x08\x01"),
    }
    dlq_seqs: dict[str, int] = {}
    for what, (subject, headers, data) in entries.items():
        ack = await js.publish(subject, data, headers=headers, stream="DLQ")
        dlq_seqs[what] = ack.seq
    lines = await redrive(url, list(dlq_seqs.values()))
    assert await stream_count(js, "PAYMENT") == 1, f"something was published to PAYMENT: {lines}"
    by_seq = {int(line.split("#")[1].split(":")[0]): line for line in lines if line.startswith("DLQ #")}
    assert "differs from PAYMENT#1 (subject, ce-id, body)" in by_seq[dlq_seqs["forged fact"]]
    assert (
        "dlq.booking.payment, which is not a DLQ subject of stream PAYMENT"
        in by_seq[dlq_seqs["other stream's DLQ subject"]]
    )
    assert "stream PAYMENT no longer holds #99" in by_seq[dlq_seqs["gone"]]
    assert "differs from PAYMENT#1 (body)" in by_seq[dlq_seqs["other body"]]
    assert all(": refused: " in line for line in by_seq.values()), lines
    kept = {d.sequence for d in await read_dead_letters(url, 100)}
    assert set(dlq_seqs.values()) <= kept, "refused entries stay in the DLQ"
    assert seq == 1


async def test_redrive_shows_its_plan_and_publishes_what_the_stream_holds(
    nats_server: NatsServer, js: JetStreamContext
) -> None:
    url = nats_server.url
    declined = _declined("b-2")
    seq, _ = await _dead_letter_from_payment(js, url, declined)
    [letter] = await read_dead_letters(nats_server.url, 10)
    plan_line = (
        f"DLQ #{letter.sequence}: publish payment.failed ce-type=choreo.payment.v1.PaymentFailed "
        f"ce-id={declined.id} (original PAYMENT#{seq})"
    )
    code, out = await choreo_cli(
        "dlq", "--nats-url", nats_server.url, "redrive", "--dry-run", str(letter.sequence)
    )
    assert (code, out.splitlines()) == (0, [plan_line, "dry run: nothing published"])
    # No terminal to confirm on, no --yes: nothing is published.
    code, out = await choreo_cli("dlq", "--nats-url", nats_server.url, "redrive", str(letter.sequence))
    assert code == 1 and plan_line in out and "nothing published" in out and "pass --yes" in out, out
    assert await stream_count(js, "PAYMENT") == 1
    code, out = await choreo_cli(
        "dlq", "--nats-url", nats_server.url, "redrive", "--yes", str(letter.sequence)
    )
    assert code == 0, out
    assert out.splitlines() == [plan_line, f"DLQ #{letter.sequence} -> payment.failed (PAYMENT #2)"]
    [first, again] = await stream_envelopes(js, "PAYMENT")
    assert (
        (again.id, again.subject, again.data)
        == (first.id, first.subject, first.data)
        == (
            declined.id,
            "payment.failed",
            declined.data,
        )
    )
    assert await read_dead_letters(nats_server.url, 10) == []
