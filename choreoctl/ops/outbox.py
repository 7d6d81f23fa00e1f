"""``choreo outbox``: see the facts the relay parked as unpublishable, and re-queue or discard them.

A parked row (``choreo.outbox``) stays in the service's ``outbox`` table and
holds back the later facts of its workflow. ``choreo outbox list`` prints each
with its reason and how many facts it holds back; ``choreo outbox retry ID...``
makes rows publishable again (after the cause is fixed: a raised
``max_payload``, a stream that captures the subject); ``choreo outbox discard
ID...`` deletes them for good, which releases the facts behind them. Only parked
rows are ever touched.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime
from typing import Any

from choreoctl.cli import Subcommand


def _time(us: int | None) -> str:
    return "-" if us is None else datetime.fromtimestamp(us / 1e6, UTC).isoformat(timespec="seconds")


def _line(row: dict[str, Any]) -> str:
    return (
        f"#{row['id']}  {row['subject']}  id={row['event_id']}  workflow={row['ordering_key']}  "
        f"{row['payload_bytes']} bytes  created={_time(row['created_at_us'])}  "
        f"parked={_time(row['parked_at_us'])}  holding back {row['holding_back']}\n"
        f"    reason: {row['parked_reason']}"
    )


async def _run(url: str, action: str, ids: list[int], limit: int) -> tuple[list[str], int]:
    from choreo.db import make_engine
    from choreo.outbox_store import discard, parked_rows, requeue

    engine = make_engine(url)
    try:
        if action == "list":
            async with engine.connect() as conn:
                rows = await parked_rows(conn, limit)
                await conn.rollback()
            return ([_line(r) for r in rows] or ["no parked outbox rows"]), 0
        async with engine.begin() as conn:
            done = await (requeue(conn, ids) if action == "retry" else discard(conn, ids))
        verb = "re-queued" if action == "retry" else "discarded"
        lines = [f"#{i} {verb}" for i in done]
        lines += [f"#{i}: no parked row with this id" for i in sorted(set(ids) - set(done))]
        return lines, 0 if len(done) == len(set(ids)) else 1
    finally:
        await engine.dispose()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--database-url", required=True, help="the service's database (as DATABASE_URL)")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="print the parked rows, oldest first")
    listing.add_argument("--limit", type=int, default=100, help="most rows to print")
    for name, text in (
        ("retry", "make parked rows publishable again"),
        ("discard", "delete parked rows for good"),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument("ids", type=int, nargs="+", metavar="ID", help="outbox row id (from list)")


def run(args: argparse.Namespace) -> int:
    try:
        lines, code = asyncio.run(
            _run(args.database_url, args.action, getattr(args, "ids", []), getattr(args, "limit", 0))
        )
    except Exception as exc:
        print(f"choreo outbox: {exc!r}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return code


SUBCOMMAND = Subcommand(
    name="outbox",
    help="list outbox rows parked as unpublishable; re-queue or discard them",
    description=__doc__ or "",
    add_arguments=add_arguments,
    run=run,
)
