"""Three guards around nats-py's pipelined JetStream publish (nats-py 2.16).

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
3. ``APIError.from_error`` *raises* the error it should return, so the handler
   of asynchronous acknowledgements (``_handle_async_reply``) raises inside its
   subscription callback when JetStream refuses a message (a full stream, a
   message over ``max_msg_size``): the error goes to the connection's error
   callback and the future is never resolved, so every refusal looked like a
   missing ack. See ``from_error`` in
   https://github.com/nats-io/nats.py/blob/v2.16.0/nats/js/errors.py.
   ``publish_async`` below wraps the handler so the refusal resolves the future.
"""

from __future__ import annotations

import asyncio
from collections.abc import Container

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import PubAck
from nats.js.errors import APIError

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
    _resolve_refusals(js)
    try:
        return await js.publish_async(subject, payload, headers=headers)
    except BaseException:
        # Looked up now: the first call replaces the dict (``_init_async_reply``).
        futures: dict[str, asyncio.Future[PubAck]] = js._publish_async_futures
        newest = next(reversed(futures.values()), None)
        if newest is not None and newest not in issued:
            newest.cancel()  # its done-callback releases the permit
        raise


# Guard 3 wraps a private method of nats-py 2.16 (pyproject pins nats-py below 2.17 for it):
# fail at import, not by quietly losing refusals, if a release renames it. Remove the guard once
# nats-py's ``APIError.from_error`` returns the error (then refusals resolve the futures themselves).
if not callable(getattr(JetStreamContext, "_handle_async_reply", None)):
    raise ImportError("choreo.jspublish wraps JetStreamContext._handle_async_reply of nats-py 2.16")

#: Marks a context whose acknowledgement handler is wrapped (guard 3).
_GUARDED = "_choreo_refusals_resolved"
#: ``_handle_async_reply``'s reply subjects: the inbox prefix, ".", a 22-character id, ".", the token.
_TOKEN_OFFSET = 22 + 2


def _resolve_refusals(js: JetStreamContext) -> None:
    """Wraps ``js``'s acknowledgement handler (before its first ``publish_async``) for guard 3."""
    if getattr(js, _GUARDED, False):
        return
    original = js._handle_async_reply

    async def handle(msg: Msg) -> None:
        try:
            await original(msg)
        except APIError as refusal:
            nc: NATS = js._nc
            futures: dict[str, asyncio.Future[PubAck]] = js._publish_async_futures
            future = futures.get(msg.subject[len(nc._inbox_prefix) + _TOKEN_OFFSET :])
            if future is not None and not future.done():
                future.set_exception(refusal)

    # An instance attribute: ``_init_async_reply`` subscribes with ``self._handle_async_reply``.
    setattr(js, "_handle_async_reply", handle)  # noqa: B010
    setattr(js, _GUARDED, True)
