"""Parity of ``choreo.compat.nats_headers``: headers parsed exactly as nats-py does, only faster."""

from __future__ import annotations

import asyncio
import inspect
import random

import pytest
from nats.aio.client import Client as NatsPyClient

from choreo.compat.nats_headers import Client, parse_header_lines
from choreo.natsclient import connect
from choreoctl.stack.natsserver import NatsServer

BLOCKS = [
    b"",
    b"\r\n",
    b"ce-id: 0190f1c2-aaaa\r\nce-type: choreo.booking.v1.BookingCreated\r\n\r\n",
    b"Name:Value\r\nOther:\tspaced value \r\n",
    b"no colon here\r\nkey: v\r\n",
    b"bad name: dropped\r\nbad\tname: dropped\r\nok: kept\r\n",
    b"  padded  :  both sides  \r\n",
    b"dup: first\r\ndup: second\r\n",
    b"utf8: caf\xc3\xa9\r\nbroken: \xff\xfe\r\n",
    b"n\xc3\xa4me: non-ascii name\r\nfine: yes\r\n",
    b"sep\x1cname: odd whitespace\r\nvalue: with: colons: inside\r\n",
    b"empty:\r\n:no name\r\n",
]


@pytest.mark.parametrize("block", BLOCKS)
def test_same_result_as_nats_py(block: bytes) -> None:
    assert parse_header_lines(block) == NatsPyClient._parse_header_lines(block)


def test_same_result_on_random_blocks() -> None:
    rng = random.Random(7)
    alphabet = b"ab:\r\n \t\x0b\x1c\xc3\xa9\xff-_."
    for _ in range(3000):
        block = bytes(rng.choice(alphabet) for _ in range(rng.randrange(0, 60)))
        assert parse_header_lines(block) == NatsPyClient._parse_header_lines(block), block


def test_nats_py_still_parses_through_the_patched_hook() -> None:
    # If nats-py renamed or stopped calling the hook, the patch would silently do nothing.
    assert "self._parse_header_lines(" in inspect.getsource(NatsPyClient._process_headers)
    assert Client._parse_header_lines is parse_header_lines


async def test_messages_arrive_with_their_headers(nats_server: NatsServer) -> None:
    nc = await connect(nats_server.url)
    try:
        assert isinstance(nc, Client)
        received: asyncio.Future[dict[str, str]] = asyncio.get_running_loop().create_future()

        async def on_message(msg: object) -> None:
            received.set_result(getattr(msg, "headers", None) or {})

        await nc.subscribe("headers.test", cb=on_message)
        await nc.flush()
        await nc.publish("headers.test", b"x", headers={"ce-id": "e-1", "ce-source": "booking"})
        assert await asyncio.wait_for(received, 5) == {"ce-id": "e-1", "ce-source": "booking"}
    finally:
        await nc.close()
