"""CommandServer: request/reply, group commit of concurrent requests, draining stop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import nats.errors
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from choreo.commands import (
    H_DEADLINE,
    H_REJECTED,
    REJECTED_EXPIRED,
    REJECTED_OVERLOADED,
    CommandServer,
    deadline_header,
)
from tests.runtime.harness import running

SUBJECT = "cmd.test.echo"


class Echo:
    """A batch handler that answers ``echo:<body>`` and records batch sizes."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.batches: list[int] = []
        self.started = asyncio.Event()

    async def __call__(self, msgs: Sequence[Msg]) -> list[bytes]:
        self.batches.append(len(msgs))
        self.started.set()
        await asyncio.sleep(self.delay)
        return [b"echo:" + m.data for m in msgs]


async def test_request_reply(nc: NATS) -> None:
    handler = Echo()
    server = CommandServer(nc, SUBJECT, "test", handler)
    async with running(server):
        await asyncio.wait_for(server.ready.wait(), 5)
        reply = await nc.request(SUBJECT, b"hello", timeout=2)
    assert reply.data == b"echo:hello"
    assert handler.batches == [1]


async def test_concurrent_requests_are_handled_in_one_batch(nc: NATS) -> None:
    handler = Echo(delay=0.2)
    server = CommandServer(nc, SUBJECT, "test", handler)
    async with running(server):
        await asyncio.wait_for(server.ready.wait(), 5)
        first = asyncio.create_task(nc.request(SUBJECT, b"first", timeout=5))
        await asyncio.wait_for(handler.started.wait(), 5)
        # These arrive while the first batch is "committing": they form the next batch together.
        rest = [asyncio.create_task(nc.request(SUBJECT, str(i).encode(), timeout=5)) for i in range(20)]
        replies = await asyncio.gather(first, *rest)
    assert [r.data for r in replies] == [b"echo:first", *(f"echo:{i}".encode() for i in range(20))]
    assert handler.batches == [1, 20]


async def test_max_batch_splits_large_bursts(nc: NATS) -> None:
    handler = Echo(delay=0.1)
    server = CommandServer(nc, SUBJECT, "test", handler, max_batch=8)
    async with running(server):
        await asyncio.wait_for(server.ready.wait(), 5)
        replies = await asyncio.gather(*(nc.request(SUBJECT, b"x", timeout=5) for _ in range(20)))
    assert all(r.data == b"echo:x" for r in replies)
    assert max(handler.batches) <= 8
    assert sum(handler.batches) == 20


async def test_failed_batch_gets_no_reply_and_the_server_goes_on(nc: NATS) -> None:
    calls = 0

    async def flaky(msgs: Sequence[Msg]) -> list[bytes]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("database down")
        return [b"ok" for _ in msgs]

    server = CommandServer(nc, SUBJECT, "test", flaky)
    async with running(server):
        await asyncio.wait_for(server.ready.wait(), 5)
        with pytest.raises(nats.errors.TimeoutError):
            await nc.request(SUBJECT, b"a", timeout=0.5)
        assert (await nc.request(SUBJECT, b"b", timeout=2)).data == b"ok"


async def test_stop_answers_what_was_received_then_stops_taking_requests(nc: NATS) -> None:
    handler = Echo(delay=0.3)
    server = CommandServer(nc, SUBJECT, "test", handler)
    task = asyncio.create_task(server.run())
    await asyncio.wait_for(server.ready.wait(), 5)

    in_flight = [asyncio.create_task(nc.request(SUBJECT, str(i).encode(), timeout=5)) for i in range(5)]
    await asyncio.wait_for(handler.started.wait(), 5)
    queued = [asyncio.create_task(nc.request(SUBJECT, f"q{i}".encode(), timeout=5)) for i in range(5)]
    await asyncio.sleep(0)  # let the request tasks publish
    await nc.flush()
    server.stop()  # while the first batch is still being handled

    replies = await asyncio.gather(*in_flight, *queued)
    assert sorted(r.data for r in replies) == sorted(
        [f"echo:{i}".encode() for i in range(5)] + [f"echo:q{i}".encode() for i in range(5)]
    )
    assert len(handler.batches) >= 2, "requests queued behind the in-flight batch were answered after stop()"
    await asyncio.wait_for(task, 5)
    with pytest.raises(nats.errors.NoRespondersError):
        await nc.request(SUBJECT, b"late", timeout=1)


async def test_stop_before_run_has_subscribed_leaves_no_subscription(nc: NATS) -> None:
    """A SIGTERM during start-up: stop() lands before run() has subscribed."""
    server = CommandServer(nc, SUBJECT, "test", Echo())
    server.stop()
    await asyncio.wait_for(server.run(), 5)
    with pytest.raises(nats.errors.NoRespondersError):
        await nc.request(SUBJECT, b"late", timeout=1)


async def test_a_command_past_its_deadline_is_not_executed(nc: NATS) -> None:
    handler = Echo(delay=0.5)
    server = CommandServer(nc, SUBJECT, "test", handler)
    async with running(server):
        await asyncio.wait_for(server.ready.wait(), 5)
        first = asyncio.create_task(nc.request(SUBJECT, b"first", timeout=5))
        await asyncio.wait_for(handler.started.wait(), 5)
        # Queued behind a batch that outlasts its deadline: dropped when its batch is taken.
        late = nc.request(
            SUBJECT, b"late", timeout=5, headers={H_DEADLINE: deadline_header(time.time() + 0.2)}
        )
        timely = nc.request(
            SUBJECT, b"timely", timeout=5, headers={H_DEADLINE: deadline_header(time.time() + 5)}
        )
        replies = await asyncio.gather(first, late, timely)
    assert replies[0].data == b"echo:first"
    assert replies[1].data == b"" and replies[1].headers == {H_REJECTED: REJECTED_EXPIRED}
    assert replies[2].data == b"echo:timely"
    assert handler.batches == [1, 1], "the expired command reached the handler"
    assert server.expired == 1


async def test_a_handler_that_leaves_a_command_out_gets_it_rejected_as_expired(nc: NATS) -> None:
    async def drop_all(msgs: Sequence[Msg]) -> list[bytes | None]:
        return [None for _ in msgs]

    server = CommandServer(nc, SUBJECT, "test", drop_all)
    async with running(server):
        await asyncio.wait_for(server.ready.wait(), 5)
        reply = await nc.request(SUBJECT, b"x", timeout=2)
    assert reply.headers == {H_REJECTED: REJECTED_EXPIRED}


async def test_a_full_queue_rejects_at_once_as_overloaded(nc: NATS) -> None:
    handler = Echo(delay=0.5)
    server = CommandServer(nc, SUBJECT, "test", handler, max_queue=3)
    async with running(server):
        await asyncio.wait_for(server.ready.wait(), 5)
        first = asyncio.create_task(nc.request(SUBJECT, b"first", timeout=5))
        await asyncio.wait_for(handler.started.wait(), 5)
        started = time.monotonic()
        replies = await asyncio.gather(*(nc.request(SUBJECT, str(i).encode(), timeout=5) for i in range(5)))
        await first
    rejected = [r for r in replies if r.headers == {H_REJECTED: REJECTED_OVERLOADED}]
    assert len(rejected) == 2 and server.overloaded == 2
    assert sorted(r.data for r in replies if r not in rejected) == [b"echo:0", b"echo:1", b"echo:2"]
    assert time.monotonic() - started < 2.0


async def test_a_reply_subject_that_is_not_an_inbox_gets_nothing(nc: NATS) -> None:
    """The requester names the reply subject: one naming a stream's API or a fact subject would
    have the server publish there as itself (a rejection's empty body deletes a stream). Such a
    command is dropped unexecuted, and so is one without a reply subject (nobody waits for it);
    inboxes, the default and a connection's own, still get answers."""
    handler = Echo()
    server = CommandServer(nc, SUBJECT, "test", handler)
    hijacked: list[Msg] = []

    async def record(msg: Msg) -> None:
        hijacked.append(msg)

    for target in ("$JS.API.STREAM.DELETE.BOOKING", "payment.succeeded", "_INBOX"):
        await nc.subscribe(target, cb=record)
    async with running(server):
        await asyncio.wait_for(server.ready.wait(), 5)
        for target in ("$JS.API.STREAM.DELETE.BOOKING", "payment.succeeded", "_INBOX"):
            await nc.publish(SUBJECT, b"executed", reply=target)
            await nc.publish(SUBJECT, b"expired", reply=target, headers={H_DEADLINE: "1"})
        await nc.publish(SUBJECT, b"nobody waits")  # no reply subject at all
        await nc.flush()
        own = await nc.subscribe("_INBOX_gateway.reply")
        await nc.publish(SUBJECT, b"mine", reply="_INBOX_gateway.reply")
        answer = await own.next_msg(timeout=2)
        default = await nc.request(SUBJECT, b"default", timeout=2)
    assert answer.data == b"echo:mine" and default.data == b"echo:default"
    assert hijacked == []
    assert handler.batches == [1, 1], "a misdirected command was executed"
    assert server.misdirected == 7 and server.expired == 0


async def test_an_unreadable_deadline_is_ignored_and_the_server_goes_on(nc: NATS) -> None:
    """A deadline too large for a float raised OverflowError out of the serving loop: one request
    from the gateway's user stopped booking (exit 1, a crash loop if repeated)."""
    handler = Echo()
    server = CommandServer(nc, SUBJECT, "test", handler)
    async with running(server):
        await asyncio.wait_for(server.ready.wait(), 5)
        for value in ("9" * 400, "-1e3", "soon", "9" * 5000):
            reply = await nc.request(SUBJECT, b"x", timeout=2, headers={H_DEADLINE: value})
            assert reply.data == b"echo:x", value
        negative = await nc.request(SUBJECT, b"x", timeout=2, headers={H_DEADLINE: "-5"})
        assert negative.headers == {H_REJECTED: REJECTED_EXPIRED}
        assert (await nc.request(SUBJECT, b"after", timeout=2)).data == b"echo:after"
