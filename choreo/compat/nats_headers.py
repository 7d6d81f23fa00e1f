"""nats-py's client with a faster message-header parser (a shim: see ``choreo.compat``).

Every fact carries a dozen CloudEvents headers, and nats-py (2.16) parses a
header block with a Python generator that tests each character of each header
name for whitespace. On a read-model replay that was the largest single cost
of the gateway (cProfile: 5.4 s of 18.9 s for 106,806 facts), and every
service pays it on every message it receives. ``parse_header_lines`` returns
exactly what nats-py's parser returns, with the same per-name check done by one
compiled regular expression; ``Client`` is nats-py's client with it plugged
into the parser hook.

Replaces:
    ``nats.aio.client.Client._parse_header_lines`` of nats-py 2.16.0,
    https://github.com/nats-io/nats.py/blob/v2.16.0/nats/aio/client.py
    (called by ``Client._process_headers`` for every message with headers).

Parity:
    ``tests/runtime/test_compat_nats_headers.py`` compares the two parsers on valid,
    malformed and random blocks, checks that nats-py still calls the hook, and
    receives a message with headers through a real nats-server.

Remove when:
    nats-py's own parser is about as fast on a fact's header block (the figure in
    ``docs/benchmarks.md``: 4.0 against 7.6 µs with nats-py 2.16), or its hook moves
    (the parity test then fails): delete this module and let
    ``choreo.natsclient.connect`` build ``nats.aio.client.Client``.
"""

from __future__ import annotations

import re

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
