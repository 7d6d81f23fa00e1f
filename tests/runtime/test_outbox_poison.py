"""A row that can never be published is parked; the rest go on, in order per workflow."""

from __future__ import annotations

import asyncio
import logging

import pytest
from nats.aio.client import Client as NATS
from nats.errors import MaxPayloadError
from nats.js import JetStreamContext
from nats.js.errors import TooManyStalledMsgsError

from choreo.bus import ensure_stream
from choreo.envelope import Envelope
from choreo.jspublish import publish_async
from choreo.payment.v1 import events_pb2 as payment_events
from choreo.runtime import Runtime
from choreoctl.cli import main
from tests.runtime.harness import SERVICE, outbox_size, running
from tests.runtime.test_outbox import commit_events, published_ids
from tests.streams import PAYMENT, PAYMENT_STREAM
from tests.support import eventually, stream_count


def fact(n: int, workflow: str, *, size: int = 0, subject: str = "payment.succeeded") -> Envelope:
    env = Envelope.wrap(
        payment_events.PaymentSucceeded(payment_id=f"p-{n}", booking_id=f"b-{n}", currency="EUR"),
        source=SERVICE,
        subject=subject,
        correlation_id=workflow,
    )
    if size:
        env = Envelope(env.id, env.type, env.source, env.subject, b"x" * size, env.correlation_id)
    return env


async def _stream_has(js: JetStreamContext, n: int) -> bool:
    return await stream_count(js, PAYMENT_STREAM) == n


def _cli(url: str, *args: str) -> int:
    return main(["outbox", "--database-url", url, *args])


async def test_nats_py_publish_async_leaks_a_permit_when_the_write_fails(nc: NATS) -> None:
    """Upstream behaviour that choreo.jspublish works around: remove the guard when this fails."""
    js = nc.jetstream(publish_async_max_pending=2)
    for _ in range(2):
        with pytest.raises(MaxPayloadError):
            await js.publish_async("payment.succeeded", b"x" * (nc.max_payload + 1))
    with pytest.raises(TooManyStalledMsgsError):  # no permit left
        await js.publish_async("payment.succeeded", b"ok", wait_stall=0.5)


async def test_a_failed_publish_gives_its_permit_back(nc: NATS) -> None:
    js = nc.jetstream(publish_async_max_pending=2)
    await ensure_stream(js, PAYMENT)
    for _ in range(5):
        with pytest.raises(MaxPayloadError):
            await publish_async(js, "payment.succeeded", b"x" * (nc.max_payload + 1), {}, ())
    ack = await asyncio.wait_for(await publish_async(js, "payment.succeeded", b"ok", {}, ()), 2.0)
    assert ack.seq == 1
    await asyncio.sleep(0)  # done-callbacks run on the next turn of the loop
    assert js.publish_async_pending() == 0


async def test_an_oversized_row_is_parked_and_every_later_fact_is_published(
    rt: Runtime, js: JetStreamContext, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="choreo.outbox")
    good = [fact(0, "wf-0"), fact(2, "wf-2"), fact(3, "wf-3")]
    huge = fact(1, "wf-1", size=2 * 1024 * 1024)
    # Under max_payload by itself, over it with its headers: the server would close the connection.
    sneaky = fact(4, "wf-4", size=rt.nc.max_payload - 16)
    async with running(rt.relay):
        await commit_events(rt, [good[0], huge, sneaky, *good[1:]])
        rt.relay.notify()
        await eventually(lambda: _stream_has(js, 3), message="the three good facts")
        later = fact(5, "wf-5")
        await commit_events(rt, [later])
        rt.relay.notify()
        await eventually(lambda: _stream_has(js, 4), timeout=2.0, message="a later fact, promptly")
    assert await published_ids(js) == [e.id for e in [*good, later]]
    assert await outbox_size(rt.engine) == 2, "parked rows stay in the outbox"
    assert rt.relay.parked_rows == 2
    assert 'choreo_outbox_parked_rows{service="rt-payment"} 2' in rt.stages.render()
    parked_logs = [r.getMessage() for r in caplog.records if "parked" in r.getMessage()]
    assert len(parked_logs) == 2 and all("max_payload" in m for m in parked_logs)
    assert rt.nc.stats["reconnects"] == 0, "nothing too large reached the server"
    assert await rt.relay.check() is None, "a parked row does not make the service unready"


async def test_a_parked_row_holds_back_only_its_own_workflow_until_discarded(
    rt: Runtime, js: JetStreamContext, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    huge = fact(1, "wf-a", size=2 * 1024 * 1024)
    after = fact(2, "wf-a")
    other = fact(3, "wf-b")
    async with running(rt.relay):
        await commit_events(rt, [huge, after, other])
        rt.relay.notify()
        await eventually(lambda: _stream_has(js, 1), message="the other workflow's fact")
        await asyncio.sleep(0.5)  # several rounds
        assert await published_ids(js) == [other.id], "a later fact of the parked one's workflow waits"

        assert await asyncio.to_thread(_cli, database_url, "list") == 0
        listed = capsys.readouterr().out
        assert huge.id in listed and "holding back 1" in listed and "max_payload" in listed
        parked_id = int(listed.split()[0].lstrip("#"))

        assert await asyncio.to_thread(_cli, database_url, "discard", str(parked_id), "999999") == 1
        out = capsys.readouterr().out
        assert f"#{parked_id} discarded" in out and "#999999: no parked row" in out
        await eventually(lambda: _stream_has(js, 2), timeout=3.0, message="the held fact, once released")
    assert await published_ids(js) == [other.id, after.id]
    assert await outbox_size(rt.engine) == 0
