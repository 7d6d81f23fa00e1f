"""``choreo dlq``: see what was dead-lettered, and send it back once fixed.

``choreo dlq list`` prints every message in the DLQ stream with where it came
from and why it failed. ``choreo dlq redrive SEQ...`` publishes each one again on
its original subject with its original headers (the original JetStream headers
restored), then deletes it from the DLQ: once the bug or the missing data is
fixed, the consumer handles it like any other event. A re-driven event keeps its
``ce-id``, so the consumers' inboxes still give it a single effect.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import dataclass

from choreo import natsclient
from choreo.cli import Subcommand
from choreo.dlq import (
    H_CONSUMER,
    H_DELIVERIES,
    H_ERROR,
    H_ORIGINAL_PREFIX,
    H_ORIGINAL_SEQUENCE,
    H_ORIGINAL_STREAM,
    H_ORIGINAL_SUBJECT,
)
from choreo.subjects import DLQ_STREAM

_OURS = (H_CONSUMER, H_DELIVERIES, H_ERROR, H_ORIGINAL_SEQUENCE, H_ORIGINAL_STREAM, H_ORIGINAL_SUBJECT)


@dataclass(frozen=True)
class DeadLetter:
    """One message of the DLQ stream."""

    sequence: int
    subject: str
    stream: str
    stream_sequence: str
    consumer: str
    deliveries: str
    error: str
    event_type: str
    event_id: str
    headers: dict[str, str]
    data: bytes

    def original_headers(self) -> dict[str, str]:
        """The headers the message was first published with."""
        out = {}
        for name, value in self.headers.items():
            # Our bookkeeping, and the Nats-* headers of the copy itself (its id, its expected
            # stream DLQ): none of them belongs to the original.
            if name in _OURS or name.lower().startswith("nats-"):
                continue
            if name.startswith(H_ORIGINAL_PREFIX):
                name = name[len(H_ORIGINAL_PREFIX) :]
            out[name] = value
        return out


async def read_dead_letters(nats_url: str, limit: int) -> list[DeadLetter]:
    """Up to ``limit`` dead letters, oldest first."""

    nc = await natsclient.connect(nats_url, connect_timeout=3, max_reconnect_attempts=0)
    try:
        js = nc.jetstream()
        info = await js.stream_info(DLQ_STREAM)
        letters: list[DeadLetter] = []
        seq = info.state.first_seq
        while seq <= info.state.last_seq and len(letters) < limit:
            try:
                msg = await js.get_msg(DLQ_STREAM, seq)
            except Exception:  # deleted (re-driven) messages leave gaps
                seq += 1
                continue
            h = dict(msg.headers or {})
            letters.append(
                DeadLetter(
                    sequence=seq,
                    subject=h.get(H_ORIGINAL_SUBJECT, ""),
                    stream=h.get(H_ORIGINAL_STREAM, ""),
                    stream_sequence=h.get(H_ORIGINAL_SEQUENCE, ""),
                    consumer=h.get(H_CONSUMER, ""),
                    deliveries=h.get(H_DELIVERIES, ""),
                    error=h.get(H_ERROR, ""),
                    event_type=h.get("ce-type", ""),
                    event_id=h.get("ce-id", ""),
                    headers=h,
                    data=msg.data or b"",
                )
            )
            seq += 1
        return letters
    finally:
        await nc.close()


async def redrive(nats_url: str, sequences: list[int]) -> list[str]:
    """Re-publishes the given DLQ messages on their original subjects and deletes them; returns lines."""

    wanted = set(sequences)
    letters = [d for d in await read_dead_letters(nats_url, 1_000_000) if d.sequence in wanted]
    missing = wanted - {d.sequence for d in letters}
    lines = [f"DLQ #{seq}: not found" for seq in sorted(missing)]
    nc = await natsclient.connect(nats_url, connect_timeout=3, max_reconnect_attempts=0)
    try:
        js = nc.jetstream()
        for letter in letters:
            headers = letter.original_headers()
            # A fresh Nats-Msg-Id: the original one may still be in the de-duplication window.
            headers["Nats-Msg-Id"] = f"redrive:{letter.sequence}:{letter.event_id}"
            ack = await js.publish(letter.subject, letter.data, headers=headers)
            await js.delete_msg(DLQ_STREAM, letter.sequence)
            lines.append(f"DLQ #{letter.sequence} -> {letter.subject} ({ack.stream} #{ack.seq})")
    finally:
        await nc.close()
    return lines


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nats-url", default="nats://127.0.0.1:4222", help="a NATS server of the system")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="print the dead letters, oldest first")
    listing.add_argument("--limit", type=int, default=100, help="most messages to print")
    again = actions.add_parser("redrive", help="publish dead letters again and delete them from the DLQ")
    again.add_argument("sequences", type=int, nargs="+", metavar="SEQ", help="DLQ stream sequence")


def run(args: argparse.Namespace) -> int:
    try:
        if args.action == "list":
            letters = asyncio.run(read_dead_letters(args.nats_url, args.limit))
            if not letters:
                print("the DLQ is empty")
            for d in letters:
                print(
                    f"#{d.sequence}  {d.stream}#{d.stream_sequence} {d.subject}  consumer={d.consumer} "
                    f"deliveries={d.deliveries} type={d.event_type or '-'} id={d.event_id or '-'}\n"
                    f"    error: {d.error}"
                )
            return 0
        lines = asyncio.run(redrive(args.nats_url, args.sequences))
        print("\n".join(lines))
        return 1 if any(line.endswith("not found") for line in lines) else 0
    except Exception as exc:
        print(f"choreo dlq: {exc!r}", file=sys.stderr)
        return 2


SUBCOMMAND = Subcommand(
    name="dlq",
    help="list dead-lettered messages and re-drive them",
    description=__doc__ or "",
    add_arguments=add_arguments,
    run=run,
)
