"""Table sizes and throughput of the inbox + outbox path over many facts (issue 8, defect 11).

Usage: python scripts/inbox_outbox_soak.py [FACTS] [DATABASE_URL]

Pushes FACTS (default 1,000,000) facts through what a consumer's transaction
does with each fact - check the inbox, record it, queue one outgoing fact in
the outbox - in batches of 256 per transaction, while the service's outbox
relay publishes to a nats-server of its own and the inbox pruner runs. Prints,
per 100,000 facts, the facts per second committed in that slice (the
producer waits while more than 10,000 facts are unpublished, so this is the
pace of the whole path, relay included) and the rows
in ``inbox`` and ``outbox`` at its end. Database: a fresh SQLite file (default)
or the given PostgreSQL database (its tables are dropped first).

The retention is 5 s here (the service default is 7 days) so that the pruner
reaches a steady state within the run: the inbox then holds about 5 s of facts,
whatever the total; the outbox holds what the relay has not published yet.
The stream keeps the last 100,000 messages (the facts themselves are not
what is measured).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from nats.js.api import StreamConfig
from sqlalchemy import Table, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from choreo import natsclient
from choreo.bus import ensure_stream, stream_config
from choreo.db import create_tables, is_sqlite, make_engine, normalize_url
from choreo.envelope import Envelope
from choreo.inbox import InboxPruner, already_processed, inbox_table, record_processed
from choreo.outbox import OutboxRelay, add_to_outbox, outbox_table
from choreo.payment.v1 import events_pb2
from choreoctl.bench.published import Published
from choreoctl.stack.natsserver import NatsServer
from payment.topology import STREAM as PAYMENT

BATCH = 256
#: Facts committed but not yet published beyond which the producer waits for the relay.
MAX_BACKLOG = 10_000
SLICE = 100_000
RETENTION_SECONDS = 5.0


async def count(engine: AsyncEngine, table: Table) -> int:
    async with engine.connect() as conn:
        n = (await conn.execute(select(func.count()).select_from(table))).scalar_one()
        await conn.rollback()
    return int(n)


async def soak(facts: int, database_url: str, root: Path) -> None:
    server = NatsServer(root / "nats")
    url = server.start()
    nc = await natsclient.connect(url)
    engine = make_engine(database_url)
    tasks: list[asyncio.Task[None]] = []
    try:
        js = nc.jetstream()
        await ensure_stream(js, PAYMENT)
        limited: StreamConfig = stream_config(PAYMENT)
        limited.max_msgs = SLICE
        await js.update_stream(limited)
        if not is_sqlite(normalize_url(database_url)):
            async with engine.begin() as conn:
                await conn.run_sync(lambda s: outbox_table.metadata.drop_all(s, [outbox_table, inbox_table]))
        await create_tables(engine, [outbox_table, inbox_table])
        published = Published()
        relay = OutboxRelay(engine, nc.jetstream(), stages=published)
        pruner = InboxPruner(engine, RETENTION_SECONDS, interval=1.0)
        tasks = [asyncio.create_task(relay.run()), asyncio.create_task(pruner.run())]
        print(f"{facts:,} facts, {BATCH} per transaction, database {engine.dialect.name}")
        print(f"{'facts':>10} {'facts/s (slice)':>16} {'inbox rows':>11} {'outbox rows':>12} {'pruned':>10}")
        started = slice_started = time.perf_counter()
        done = 0
        next_report = SLICE
        while done < facts:
            while done - published.acknowledged > MAX_BACKLOG:  # the path runs at the relay's pace
                published.progress.clear()
                await published.progress.wait()
            n = min(BATCH, facts - done)
            incoming = [f"in-{done + i}" for i in range(n)]
            outgoing = [
                Envelope.wrap(
                    events_pb2.PaymentSucceeded(payment_id=f"p-{done + i}", booking_id=f"b-{done + i}"),
                    source="soak",
                    subject="payment.succeeded",
                    correlation_id=f"wf-{done + i}",
                )
                for i in range(n)
            ]
            async with engine.begin() as conn:
                seen = await already_processed(conn, "soak", incoming)
                await record_processed(conn, "soak", [(e, 0) for e in incoming if e not in seen])
                await add_to_outbox(conn, outgoing)
            relay.notify()
            done += n
            if done >= next_report or done == facts:
                now = time.perf_counter()
                rate = (done - next_report + SLICE) / (now - slice_started)
                slice_started, next_report = now, done + SLICE
                inbox, outbox = await count(engine, inbox_table), await count(engine, outbox_table)
                print(
                    f"{done:>10,} {rate:>16,.0f} {inbox:>11,} {outbox:>12,} {pruner.pruned:>10,}", flush=True
                )
        print(f"total {facts / (time.perf_counter() - started):,.0f} facts/s")
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await nc.close()
        await engine.dispose()
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n", 1)[0])
    parser.add_argument(
        "facts", nargs="?", type=int, default=1_000_000, help="facts to push (default 1,000,000)"
    )
    parser.add_argument(
        "database_url", nargs="?", help="a PostgreSQL database (default: a fresh SQLite file)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="soak-") as folder:
        url = args.database_url or f"sqlite:///{Path(folder) / 'soak.db'}"
        asyncio.run(soak(args.facts, url, Path(folder)))


if __name__ == "__main__":
    main()
