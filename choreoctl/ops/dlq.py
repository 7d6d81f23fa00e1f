"""``choreo dlq``: see what was dead-lettered, and send it back once fixed.

``choreo dlq list`` prints every message in the DLQ stream with where it came
from and why it failed. ``choreo dlq redrive SEQ...`` publishes each one again,
then deletes it from the DLQ: once the bug or the missing data is fixed, the
consumer handles it like any other event. A re-driven event keeps its ``ce-id``,
so the consumers' inboxes still give it a single effect.

A DLQ entry is only a claim: any user allowed to dead-letter may write one, and
its headers name the stream, sequence and subject it says it came from. So a
re-drive publishes only what the source stream really holds at that sequence
(the streams keep their history): an entry is refused when its DLQ subject
(``dlq.<stream>.<consumer>``) names another stream than its header does, when
the stream no longer holds the original, or when its subject, ``ce-id`` or body
differ from the original's. What is published is the original, on its own
stream only (``Nats-Expected-Stream``). The plan (subject, ``ce-type``,
``ce-id``, original ``stream#seq``) is printed first and confirmed
(``--yes`` skips the question, ``--dry-run`` publishes nothing).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from choreo import natsclient
from choreo.dlq import (
    DLQ_STREAM,
    H_CONSUMER,
    H_DELIVERIES,
    H_ERROR,
    H_ORIGINAL_SEQUENCE,
    H_ORIGINAL_STREAM,
    H_ORIGINAL_SUBJECT,
)
from choreo.natsidentity import tool_inbox
from choreo.topology import subject_matches
from choreoctl.cli import Subcommand

_CE_ID = "ce-id"
_CE_TYPE = "ce-type"


@dataclass(frozen=True)
class DeadLetter:
    """One message of the DLQ stream.

    Attributes:
        sequence: Its sequence in the DLQ stream.
        dlq_subject: The subject it was stored under (``dlq.<stream>.<consumer>``).
        subject, stream, stream_sequence, consumer, deliveries, error: What its headers claim.
    """

    sequence: int
    dlq_subject: str
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


@dataclass(frozen=True)
class Redrive:
    """What re-driving one dead letter publishes: the source stream's original message."""

    letter: DeadLetter
    subject: str
    headers: dict[str, str]
    data: bytes

    def describe(self) -> str:
        return (
            f"DLQ #{self.letter.sequence}: publish {self.subject} "
            f"ce-type={self.headers.get(_CE_TYPE, '-')} ce-id={self.headers.get(_CE_ID, '-')} "
            f"(original {self.letter.stream}#{self.letter.stream_sequence})"
        )


class Refused(Exception):
    """A dead letter that is not re-driven, and why."""


async def _connect(nats_url: str) -> NATS:
    return await natsclient.connect(
        nats_url, connect_timeout=3, max_reconnect_attempts=0, inbox_prefix=tool_inbox(nats_url, "dlq")
    )


async def _read(js: JetStreamContext, limit: int) -> list[DeadLetter]:
    info = await js.stream_info(DLQ_STREAM)
    letters: list[DeadLetter] = []
    seq = max(info.state.first_seq, 1)  # an empty stream says 0
    while seq <= info.state.last_seq and len(letters) < limit:
        letter = await _letter(js, seq)
        if letter is not None:  # deleted (re-driven) messages leave gaps
            letters.append(letter)
        seq += 1
    return letters


async def _letter(js: JetStreamContext, seq: int) -> DeadLetter | None:
    """The DLQ message at ``seq``; ``None`` when there is none."""
    try:
        msg = await js.get_msg(DLQ_STREAM, seq)
    except NotFoundError:
        return None
    h = dict(msg.headers or {})
    return DeadLetter(
        sequence=seq,
        dlq_subject=msg.subject or "",
        subject=h.get(H_ORIGINAL_SUBJECT, ""),
        stream=h.get(H_ORIGINAL_STREAM, ""),
        stream_sequence=h.get(H_ORIGINAL_SEQUENCE, ""),
        consumer=h.get(H_CONSUMER, ""),
        deliveries=h.get(H_DELIVERIES, ""),
        error=h.get(H_ERROR, ""),
        event_type=h.get(_CE_TYPE, ""),
        event_id=h.get(_CE_ID, ""),
        headers=h,
        data=msg.data or b"",
    )


async def read_dead_letters(nats_url: str, limit: int) -> list[DeadLetter]:
    """Up to ``limit`` dead letters, oldest first."""
    nc = await _connect(nats_url)
    try:
        return await _read(nc.jetstream(), limit)
    finally:
        await nc.close()


async def plan(js: JetStreamContext, letter: DeadLetter) -> Redrive:
    """What re-driving ``letter`` would publish, checked against its source stream.

    Raises:
        Refused: The entry does not match what the stream it names holds.
    """
    stream = letter.stream
    if stream == DLQ_STREAM:
        raise Refused(f"names stream {stream!r}, not a stream of facts")
    try:
        # What JetStream holds, not what this release declares: the stream's own subjects.
        subjects = (await js.stream_info(stream)).config.subjects or []
    except NotFoundError:
        raise Refused(f"names stream {stream!r}, which JetStream does not hold") from None
    token = letter.dlq_subject.split(".")[1] if letter.dlq_subject.count(".") >= 2 else ""
    if token != stream.lower():
        raise Refused(f"stored under {letter.dlq_subject}, which is not a DLQ subject of stream {stream}")
    if not any(subject_matches(p, letter.subject) for p in subjects):
        raise Refused(f"subject {letter.subject!r} is not one of stream {stream}'s")
    if not letter.stream_sequence.isdigit() or int(letter.stream_sequence) < 1:
        raise Refused(f"names no valid sequence of {stream} ({letter.stream_sequence!r})")
    try:
        original = await js.get_msg(stream, int(letter.stream_sequence))
    except NotFoundError:
        raise Refused(
            f"stream {stream} no longer holds #{letter.stream_sequence}: nothing to re-drive "
            "(the original was deleted or aged out)"
        ) from None
    headers = dict(original.headers or {})
    differences = [
        what
        for what, theirs, ours in (
            ("subject", original.subject or "", letter.subject),
            (_CE_ID, headers.get(_CE_ID, ""), letter.event_id),
            ("body", original.data or b"", letter.data),
        )
        if theirs != ours
    ]
    if differences:
        raise Refused(
            f"differs from {stream}#{letter.stream_sequence} ({', '.join(differences)}):"
            " not what the stream holds"
        )
    # A fresh Nats-Msg-Id: the original one may still be in the de-duplication window.
    headers["Nats-Msg-Id"] = f"redrive:{letter.sequence}:{letter.event_id}"
    return Redrive(letter=letter, subject=letter.subject, headers=headers, data=original.data or b"")


Confirm = Callable[[Sequence[Redrive]], bool]


async def redrive(
    nats_url: str,
    sequences: list[int],
    *,
    confirm: Confirm | None = None,
    dry_run: bool = False,
    out: Callable[[str], None] | None = None,
) -> list[str]:
    """Re-publishes the given DLQ messages as their source streams hold them, then deletes them.

    Args:
        nats_url: A NATS server of the system.
        sequences: DLQ stream sequences.
        confirm: Asked once the plan is out, whether to publish it (None: publish).
        dry_run: Only plan.
        out: Gets each line as soon as it is known (the plan before ``confirm``).

    Returns:
        The lines: per sequence, the plan or why it is refused, then what was published.
    """
    lines: list[str] = []

    def say(line: str) -> None:
        lines.append(line)
        if out is not None:
            out(line)

    wanted = set(sequences)
    nc = await _connect(nats_url)
    try:
        js = nc.jetstream()
        # Each wanted entry by its sequence: never a scan of the whole DLQ.
        letters: list[DeadLetter] = []
        for seq in sorted(wanted):
            letter = await _letter(js, seq)
            if letter is None:
                say(f"DLQ #{seq}: not found")
            else:
                letters.append(letter)
        plans: list[Redrive] = []
        for letter in letters:
            try:
                plans.append(await plan(js, letter))
                say(plans[-1].describe())
            except Refused as exc:
                say(f"DLQ #{letter.sequence}: refused: {exc}")
        if not plans:
            return lines
        if dry_run:
            say("dry run: nothing published")
            return lines
        if confirm is not None and not confirm(plans):
            say("nothing published")
            return lines
        for p in plans:
            ack = await js.publish(p.subject, p.data, headers=p.headers, stream=p.letter.stream)
            await js.delete_msg(DLQ_STREAM, p.letter.sequence)
            say(f"DLQ #{p.letter.sequence} -> {p.subject} ({ack.stream} #{ack.seq})")
        return lines
    finally:
        await nc.close()


def ask(plans: Sequence[Redrive]) -> bool:
    """Asks on the terminal; no terminal means no."""
    if not sys.stdin.isatty():
        print("not a terminal: pass --yes to publish", file=sys.stderr)
        return False
    answer = input(f"publish {len(plans)} message(s)? [y/N] ")
    return answer.strip().lower() in ("y", "yes")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--nats-url",
        default="nats://127.0.0.1:4222",
        help="a NATS server of the system (choreo up prints its operator URL)",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="print the dead letters, oldest first")
    listing.add_argument("--limit", type=int, default=100, help="most messages to print")
    again = actions.add_parser("redrive", help="publish dead letters again and delete them from the DLQ")
    again.add_argument("sequences", type=int, nargs="+", metavar="SEQ", help="DLQ stream sequence")
    again.add_argument("--yes", action="store_true", help="publish without asking")
    again.add_argument(
        "--dry-run", action="store_true", help="print what would be published, publish nothing"
    )


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

        confirm = None if args.yes else ask
        lines = asyncio.run(
            redrive(args.nats_url, args.sequences, confirm=confirm, dry_run=args.dry_run, out=print)
        )
        failed = [line for line in lines if line.endswith(": not found") or ": refused: " in line]
        return 1 if failed or "nothing published" in lines else 0
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
