"""Two guards around nats-py's pipelined JetStream publish (nats-py 2.16).

1. ``publish_async`` registers the acknowledgement's future, holding one of the
   context's ``publish_async_max_pending`` permits, *before* it writes the
   message; when the write raises (``MaxPayloadError``, a closed connection, a
   full reconnect buffer) nobody ever resolves that future, so the permit is
   never given back and, after 4,000 such failures, every later publish waits
   forever. See ``publish_async`` in
   https://github.com/nats-io/nats.py/blob/v2.16.0/nats/js/client.py (the
   ``handle_done`` callback is the only place a permit is released).
   ``publish_async`` below cancels the orphaned future, which releases it.
2. nats-py compares only the payload with the server's ``max_payload``; the
   server counts headers too and closes the connection on a larger message
   (fixed upstream by https://github.com/nats-io/nats.py/pull/888).
   ``frame_size`` is what the server counts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Container

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import PubAck

#: "NATS/1.0\r\n" + "\r\n" around the header lines.
_HEADER_OVERHEAD = len(b"NATS/1.0\r\n\r\n")


def frame_size(headers: dict[str, str], payload: bytes) -> int:
    """Bytes of a message the server compares with its ``max_payload`` (headers + payload)."""
    lines = sum(len(k.encode()) + 2 + len(v.encode()) + 2 for k, v in headers.items())
    return _HEADER_OVERHEAD + lines + len(payload)


def max_payload(js: JetStreamContext) -> int:
    """The ``max_payload`` the connected server announced (1 MiB by default)."""
    nc: NATS = js._nc
    return nc.max_payload


async def publish_async(
    js: JetStreamContext,
    subject: str,
    payload: bytes,
    headers: dict[str, str],
    issued: Container[asyncio.Future[PubAck]],
) -> asyncio.Future[PubAck]:
    """``js.publish_async`` that gives its permit back when the write fails.

    The caller must be the only user of ``publish_async`` on ``js`` (the outbox
    relay has a context of its own) and pass the futures it holds from earlier
    calls as ``issued``: then the newest registered future that is not one of
    them was registered by this call.
    """
    try:
        return await js.publish_async(subject, payload, headers=headers)
    except BaseException:
        # Looked up now: the first call replaces the dict (``_init_async_reply``).
        futures: dict[str, asyncio.Future[PubAck]] = js._publish_async_futures
        newest = next(reversed(futures.values()), None)
        if newest is not None and newest not in issued:
            newest.cancel()  # its done-callback releases the permit
        raise
