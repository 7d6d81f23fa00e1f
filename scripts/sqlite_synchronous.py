"""What SQLite ``synchronous=FULL`` costs a service's transaction, against ``NORMAL``.

Usage: python scripts/sqlite_synchronous.py [DIR]

A consumer's transaction records the events it handled in the inbox and queues
the facts they caused in the outbox, then commits; the acknowledgement (and, for
a command, the reply) follows the commit. This runs that transaction on a
SQLite file in DIR (default: a temporary folder; use the disk the data lives on,
not a tmpfs, where fsync is free), with one event per transaction (low load:
every event pays a commit) and 256 (a full batch), in both modes, alternating
the modes round by round so a change in the machine's load hits both. Prints
the commit latency (median, p99) and events/s of each.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from choreo.booking.v1 import events_pb2
from choreo.contract import fact_subject
from choreo.db import create_tables, make_engine
from choreo.envelope import Envelope
from choreo.inbox import inbox_table, record_processed
from choreo.outbox import add_to_outbox, outbox_table

MODES = ("NORMAL", "FULL")
ROUNDS = 3


def fact(i: int) -> Envelope:
    return Envelope.wrap(
        events_pb2.BookingCreated(booking_id=f"b-{i}"),
        source="bench",
        subject=fact_subject(events_pb2.BookingCreated),
        correlation_id=f"c-{i}",
    )


async def run(path: Path, synchronous: str, batch: int, transactions: int) -> list[float]:
    """Seconds of each transaction (inbox insert + outbox insert + commit)."""
    engine = make_engine(f"sqlite:///{path}", synchronous=synchronous)
    seconds: list[float] = []
    try:
        await create_tables(engine, [inbox_table, outbox_table])
        facts = [fact(i) for i in range(batch)]
        for _ in range(transactions):
            handled = [(uuid.uuid4().hex, i) for i in range(batch)]
            started = time.perf_counter()
            async with engine.begin() as conn:
                await record_processed(conn, "bench", handled)
                await add_to_outbox(conn, facts)
            seconds.append(time.perf_counter() - started)
    finally:
        await engine.dispose()
    return seconds


async def main(root: Path) -> None:
    cases = [(1, 400), (256, 40)]
    results: dict[tuple[str, int], list[float]] = {(m, b): [] for m in MODES for b, _ in cases}
    for round_ in range(ROUNDS):
        for batch, transactions in cases:
            for mode in MODES:
                path = root / f"{mode}-{batch}-{round_}.db"
                results[(mode, batch)] += await run(path, mode, batch, transactions)
    print(f"{'synchronous':<12}{'events/tx':>10}{'median ms':>11}{'p99 ms':>9}{'events/s':>10}")
    for (mode, batch), seconds in sorted(results.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        p99 = statistics.quantiles(seconds, n=100)[98]
        rate = batch * len(seconds) / sum(seconds)
        print(
            f"{mode:<12}{batch:>10}{statistics.median(seconds) * 1000:>11.2f}{p99 * 1000:>9.2f}{rate:>10.0f}"
        )


if __name__ == "__main__":
    if len(sys.argv) > 1:
        folder = Path(sys.argv[1])
        folder.mkdir(parents=True, exist_ok=True)
        asyncio.run(main(folder))
    else:
        with tempfile.TemporaryDirectory(prefix="sqlite-sync-", dir=".") as tmp:
            asyncio.run(main(Path(tmp)))
