"""Does nats-server's memory grow with stored history, or with the de-duplication window?

Usage: python scripts/nats_dedupe_memory.py [MESSAGES]

``choreo bench`` sees nats-server's resident memory grow between its two scale
levels while the services stay flat. This script separates the two causes it
could have: it publishes MESSAGES (default 300,000) messages the size of a
booking fact, each with its own ``Nats-Msg-Id``, as fast as JetStream takes
them, into a fresh file-store stream, once with choreo's duplicate window
(``choreo.bus.DUPLICATE_WINDOW_SECONDS``) and once with a 1 s window, and
prints nats-server's RSS at 10%, 33% and 100% of the messages. Growth with the
long window only is the map of message ids JetStream keeps for the window:
bounded by publish rate x window, not by history.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

from nats.js.api import StreamConfig

from choreo import natsclient
from choreo.bus import DUPLICATE_WINDOW_SECONDS
from choreoctl.bench.procstats import read_sample
from choreoctl.stack.natsserver import NatsServer


async def measure(window: float, messages: int) -> dict[int, int]:
    with tempfile.TemporaryDirectory(prefix="nats-dedupe-") as store:
        server = NatsServer(Path(store))
        url = server.start()
        try:
            assert server.process is not None
            nc = await natsclient.connect(url)
            js = nc.jetstream()
            await js.add_stream(StreamConfig(name="T", subjects=["t.>"], duplicate_window=window))
            payload = b"x" * 150
            headers = {f"ce-h{i}": "v" * 30 for i in range(8)}
            marks = {messages // 10, messages // 3, messages}
            rss_mb: dict[int, int] = {}
            for i in range(1, messages + 1):
                ack = await js.publish_async(
                    "t.a", payload, headers={**headers, "Nats-Msg-Id": f"id-{i:012d}"}
                )
                if i % 2000 == 0:
                    await ack
                if i in marks:
                    await js.publish_async_completed()
                    sample = read_sample(server.process.pid)
                    rss_mb[i] = sample.rss_kb // 1024 if sample else -1
            await nc.close()
            return rss_mb
        finally:
            server.stop()


def main() -> None:
    messages = int(sys.argv[1]) if len(sys.argv) > 1 else 300_000
    for window in (DUPLICATE_WINDOW_SECONDS, 1.0):
        rss = asyncio.run(measure(window, messages))
        marks = ", ".join(f"{n:,} messages: {mb} MB" for n, mb in sorted(rss.items()))
        print(f"duplicate window {window:g}s -> nats-server RSS at {marks}")


if __name__ == "__main__":
    main()
