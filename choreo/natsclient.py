"""The NATS client of every choreo process: nats-py's, with a faster header parser.

Every fact carries a dozen CloudEvents headers, and nats-py (2.16) parses a
header block with a Python generator that tests each character of each header
name for whitespace. On a read-model replay that was the largest single cost
of the gateway (cProfile: 5.4 s of 18.9 s for 106,806 facts), and every
service pays it on every message it receives. ``parse_header_lines`` returns
exactly what nats-py's parser returns (``tests/runtime/test_natsclient.py``
compares the two on valid and malformed blocks), with the same per-name
check done by one compiled regular expression.
"""

from __future__ import annotations

import re
from typing import Any

from nats.aio.client import Client as _NatsClient

# What str.isspace() accepts among ASCII characters (a name that decoded as ASCII).
_SPACE = re.compile("[\t\n\x0b\x0c\r\x1c-\x1f ]")


def parse_header_lines(raw: bytes) -> dict[str, str]:
    """Parses ``Name: Value`` lines as nats-py does: malformed lines and names are skipped."""
    out: dict[str, str] = {}
    for line in raw.split(b"\r\n"):
        name, sep, value = line.partition(b":")
        if not sep:  # also an empty line
            continue
        try:
            key = name.strip().decode("ascii")
        except UnicodeDecodeError:
            continue
        if _SPACE.search(key) is not None:
            continue
        out[key] = value.strip().decode("utf-8", "replace")
    return out


class Client(_NatsClient):
    """nats-py's client with ``parse_header_lines`` as its header parser."""

    _parse_header_lines = staticmethod(parse_header_lines)


async def connect(servers: str | list[str] = "nats://localhost:4222", **options: Any) -> Client:
    """Like ``nats.connect``, returning this module's ``Client``."""
    nc = Client()
    await nc.connect(servers, **options)
    return nc
