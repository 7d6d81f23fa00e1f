"""Dead letters: a message that cannot be handled is kept, with why, and skipped.

The copy keeps the original subject, headers and body, and adds where it came
from and the error, so an operator can inspect it and re-publish it. Only after
the copy is stored is the original terminated, so nothing is silently dropped.
"""

from __future__ import annotations

import logging

from nats.aio.msg import Msg
from nats.js import JetStreamContext

from choreo.topology import Stream

log = logging.getLogger(__name__)

#: The runtime's own stream: every consumer's dead letters, on ``dlq.<stream>.<consumer>``.
DLQ = Stream("DLQ", ("dlq.>",))
DLQ_STREAM = DLQ.name


def dlq_subject(stream: str, consumer: str) -> str:
    """The subject of the dead letters of ``consumer`` reading ``stream``."""
    return f"dlq.{stream.lower()}.{consumer}"


H_ORIGINAL_SUBJECT = "choreo-dlq-subject"
H_ORIGINAL_STREAM = "choreo-dlq-stream"
H_ORIGINAL_SEQUENCE = "choreo-dlq-sequence"
H_CONSUMER = "choreo-dlq-consumer"
H_DELIVERIES = "choreo-dlq-deliveries"
H_ERROR = "choreo-dlq-error"
#: Prefix of the original's JetStream (``Nats-*``) headers in the copy.
H_ORIGINAL_PREFIX = "choreo-dlq-original-"


async def dead_letter(js: JetStreamContext, msg: Msg, consumer: str, error: str) -> None:
    """Copies ``msg`` to the DLQ stream, then terminates it so it is never redelivered."""
    await copy_to_dlq(js, msg, consumer, error)
    await msg.term()


async def copy_to_dlq(js: JetStreamContext, msg: Msg, consumer: str, error: str) -> None:
    """Stores a copy of a JetStream message in the DLQ stream, with where it came from and why.

    Consumers without acknowledgements (ordered consumers of a projection) use
    this directly and then skip the message.
    """
    meta = msg.metadata
    stream = meta.stream
    seq = meta.sequence.stream
    # JetStream acts on Nats-* headers when a message is published (expected last
    # sequence, rollup, TTL...): copied as they are, they could make the DLQ refuse
    # the copy, and the consumer would fail on the same message forever. They are
    # kept under another name instead.
    headers = {
        (H_ORIGINAL_PREFIX + name if name.lower().startswith("nats-") else name): value
        for name, value in (msg.headers or {}).items()
    }
    # Our own id, so a retried dead-lettering is de-duplicated by JetStream.
    headers["Nats-Msg-Id"] = f"dlq:{stream}:{seq}:{consumer}"
    headers.update(
        {
            H_ORIGINAL_SUBJECT: msg.subject,
            H_ORIGINAL_STREAM: stream,
            H_ORIGINAL_SEQUENCE: str(seq),
            H_CONSUMER: consumer,
            H_DELIVERIES: str(meta.num_delivered),
            H_ERROR: error[:1000].replace("\r", " ").replace("\n", " "),
        }
    )
    await js.publish(dlq_subject(stream, consumer), msg.data, headers=headers, stream=DLQ_STREAM)
    log.error(
        "dead-lettered %s seq %d: %s",
        msg.subject,
        seq,
        error,
        extra={"stream": stream, "stream_seq": seq, "consumer": consumer},
    )
