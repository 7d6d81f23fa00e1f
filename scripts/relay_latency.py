"""One outbox hop in one process: a transaction, then the relay until JetStream acknowledges.

Usage: python scripts/relay_latency.py [GAP_SECONDS ...]

Runs 200 hops back to back and 200 with GAP_SECONDS of idleness before each
(default gaps: 0 and 0.02, which is the benchmark's low load of 20 bookings/s)
against a nats-server and a SQLite database of its own, and prints the median
transaction (insert one outbox row, commit) and the median time from the
relay's wake-up to JetStream's acknowledgement (its SELECT, the publish, the
acknowledgement, the DELETE). The difference between the two rows is what an
idle machine adds to each hop (caches gone cold, the CPU woken up), which the
benchmark's low-load latency pays on every hop.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from booking.topology import STREAM as BOOKING
from choreo import natsclient
from choreo.booking.v1 import events_pb2
from choreo.bus import ensure_stream
from choreo.contract import fact_subject
from choreo.db import create_tables, make_engine
from choreo.envelope import Envelope
from choreo.outbox import OutboxRelay, add_to_outbox, outbox_table
from choreoctl.bench.published import Published
from choreoctl.stack.natsserver import NatsServer


async def hops(gap: float, count: int = 200) -> tuple[float, float]:
    """Median milliseconds of the transaction and of wake-up -> acknowledged."""
    with tempfile.TemporaryDirectory(prefix="relay-latency-") as folder:
        root = Path(folder)
        server = NatsServer(root / "nats")
        url = server.start()
        nc = await natsclient.connect(url)
        engine = make_engine(f"sqlite:///{root / 'outbox.db'}")
        relay_task: asyncio.Task[None] | None = None
        try:
            js = nc.jetstream()
            await ensure_stream(js, BOOKING)
            await create_tables(engine, [outbox_table])
            published = Published()
            relay = OutboxRelay(engine, js, stages=published)
            acked = published.progress
            relay_task = asyncio.create_task(relay.run())
            transactions, relayed = [], []
            for i in range(count):
                if gap:
                    await asyncio.sleep(gap)
                acked.clear()
                fact = Envelope.wrap(
                    events_pb2.BookingCreated(booking_id=f"b-{i}"),
                    source="bench",
                    subject=fact_subject(events_pb2.BookingCreated),
                    correlation_id=f"c-{i}",
                )
                started = time.perf_counter()
                async with engine.begin() as conn:
                    await add_to_outbox(conn, [fact])
                committed = time.perf_counter()
                relay.notify()
                await acked.wait()
                transactions.append((committed - started) * 1000)
                relayed.append((time.perf_counter() - committed) * 1000)
            relay.stop()
            await relay_task
            return statistics.median(transactions), statistics.median(relayed)
        finally:
            if relay_task is not None and not relay_task.done():
                relay_task.cancel()
            await nc.close()
            await engine.dispose()
            server.stop()


def main() -> None:
    gaps = [float(a) for a in sys.argv[1:]] or [0.0, 0.02]
    for gap in gaps:
        transaction, relayed = asyncio.run(hops(gap))
        print(
            f"idle {gap * 1000:4.0f} ms before each hop: transaction {transaction:.3f} ms, "
            f"relay wake-up -> acknowledged {relayed:.3f} ms (medians of 200)"
        )


if __name__ == "__main__":
    main()
