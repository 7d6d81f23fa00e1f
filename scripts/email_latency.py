"""Time from ``BookingCreated`` to its email accepted by the SMTP server, on a running ``choreo up``.

Usage (with ``choreo up`` running on its embedded SMTP sink, default ports and ``./var``):

    python scripts/email_latency.py [--count 50] [--rate 5] [--http http://127.0.0.1:8080] [--data-dir var]

Creates ``--count`` bookings through the gateway's HTTP API at ``--rate`` per second (low
load: one at a time), each with an email address, then reads the sink's ``DIR/mail``: each
file is named by the time the sink accepted the message (``choreoctl.stack.mailsink``).
Prints percentiles of accepted - ``created_at`` (the booking's creation time, which
``BookingCreated`` carries) for the "received" email, and for the outcome email. The path
measured is the whole choreography's: booking's commit, its outbox relay, JetStream,
notification's consumer, the SMTP session. One machine, so the clocks agree.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx

from choreoctl.bench.stats import LatencySummary
from choreoctl.stack.mailsink import MailStore, read_headers


def accepted_at(path: Path) -> float:
    """When the sink accepted the message: its file name's ``YYYYmmddTHHMMSS.ffffffZ`` prefix."""
    stamp = path.name.split("-", 1)[0]
    return datetime.strptime(stamp, "%Y%m%dT%H%M%S.%fZ").replace(tzinfo=UTC).timestamp()


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument("--rate", type=float, default=5.0, help="bookings per second")
    parser.add_argument("--http", default="http://127.0.0.1:8080")
    parser.add_argument("--data-dir", type=Path, default=Path("var"))
    parser.add_argument("--token", default="", help="bearer token (choreo up --auth)")
    args = parser.parse_args()
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    run = uuid.uuid4().hex[:8]
    created: dict[str, float] = {}
    async with httpx.AsyncClient(base_url=args.http, headers=headers, timeout=10) as http:
        for i in range(args.count):
            body = {
                "user_id": "dev-user" if args.token else f"latency-{run}",
                "amount_cents": 1000 + i,
                "currency": "EUR",
                "payment_token": "tok_visa",
                "email": f"latency-{run}-{i}@example.com",
            }
            reply = (await http.post("/v1/bookings", json=body)).raise_for_status().json()
            created[reply["booking_id"]] = datetime.fromisoformat(reply["created_at"]).timestamp()
            await asyncio.sleep(1 / args.rate)
    store = MailStore(args.data_dir / "mail")
    deadline = time.monotonic() + 30
    while True:
        mails = [(p, read_headers(p)) for p in store.paths()]
        ours = [(p, m) for p, m in mails if m.booking_id in created]
        if len(ours) >= 2 * len(created) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    received: list[float] = []
    outcome: list[float] = []
    for path, mail in ours:
        waited = (accepted_at(path) - created[mail.booking_id]) * 1000
        (received if mail.subject.startswith("We received") else outcome).append(waited)
    if len(received) < len(created):
        print(f"only {len(received)} of {len(created)} 'received' emails arrived", file=sys.stderr)
        return 1
    print(f"{len(created)} bookings at {args.rate:g}/s through {args.http}; emails from {store.directory}")
    print(f"BookingCreated -> 'received' email accepted:   {LatencySummary.of(received).line()}")
    print(f"BookingCreated -> outcome email accepted:      {LatencySummary.of(outcome).line()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
