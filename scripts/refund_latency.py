"""Time from ``CancelBooking`` to the refund, at low load, on a running ``choreo up``.

Usage (with ``choreo up`` running, default ports):

    python scripts/refund_latency.py [--count 30] [--http http://127.0.0.1:8080] [--token T]

For each of ``--count`` bookings, one at a time: creates a booking of one unit of a
resource, waits until it is CONFIRMED (reserved, then charged), then cancels it over
HTTP (``POST /v1/bookings/{id}:cancel``) and follows its trace until ``PaymentRefunded``.
Prints percentiles of the refund fact's own time (``occurred_at``, stamped by payment when
it recorded the refund) minus the moment the cancel was sent: the path is booking's
cancel transaction, its outbox relay, JetStream, payment's consumer, the provider's
refund and payment's commit. One machine, so the clocks agree. Also prints when the
client first saw the refund in the trace (that adds the gateway's projection and polling).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from datetime import datetime

import httpx

from choreoctl.bench.stats import LatencySummary


async def refund_of(http: httpx.AsyncClient, booking_id: str, timeout: float = 30) -> tuple[float, float]:
    """(the refund fact's time, when the client saw it), both Unix seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        trace = (await http.get(f"/v1/bookings/{booking_id}/trace")).raise_for_status().json()
        for event in trace.get("events", []):
            if event["event_type"].endswith(".PaymentRefunded"):
                return datetime.fromisoformat(event["occurred_at"]).timestamp(), time.time()
        await asyncio.sleep(0.005)
    raise TimeoutError(f"no PaymentRefunded for {booking_id} in {timeout}s")


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=30)
    parser.add_argument("--http", default="http://127.0.0.1:8080")
    parser.add_argument("--token", default="", help="bearer token (choreo up --auth)")
    args = parser.parse_args()
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    run = uuid.uuid4().hex[:8]
    recorded: list[float] = []
    seen: list[float] = []
    async with httpx.AsyncClient(base_url=args.http, headers=headers, timeout=15) as http:
        for i in range(args.count):
            body = {
                "user_id": "dev-user" if args.token else f"refund-{run}",
                "amount_cents": 1000 + i,
                "currency": "EUR",
                "payment_token": "tok_visa",
                "resource_id": f"refund-latency-{run}",
                "quantity": 1,
            }
            booking = (await http.post("/v1/bookings", json=body)).raise_for_status().json()
            booking_id = booking["booking_id"]
            settled = (await http.get(f"/v1/bookings/{booking_id}", params={"wait": 10})).json()
            if settled["status"] != "BOOKING_STATUS_CONFIRMED":
                print(f"booking {booking_id} ended {settled['status']}, not CONFIRMED", file=sys.stderr)
                return 1
            sent = time.time()
            (await http.post(f"/v1/bookings/{booking_id}:cancel")).raise_for_status()
            refunded_at, seen_at = await refund_of(http, booking_id)
            recorded.append((refunded_at - sent) * 1000)
            seen.append((seen_at - sent) * 1000)
            await asyncio.sleep(0.1)
    print(f"{args.count} cancellations of CONFIRMED bookings, one at a time, through {args.http}")
    print(f"CancelBooking sent -> PaymentRefunded recorded:     {LatencySummary.of(recorded).line()}")
    print(f"CancelBooking sent -> refund seen in the trace:     {LatencySummary.of(seen).line()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
