"""The invariants every scenario must keep, and its one-line figure.

After the faults: every accepted booking is terminal as its token says (in
booking's database and through the gateway), each booking exists once, each
charge is in the provider's ledger exactly once (charges minus refunds =
confirmed amounts), the DLQ holds the poison and nothing else, and no process
exited on its own or was restarted except those the scenario killed. Every
check is evaluated (and the figure printed) before the test fails, so one
failure message lists every broken invariant.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass

import grpc
from nats.js.errors import NotFoundError
from sqlalchemy import inspect, text

from choreo.gateway.v1 import gateway_pb2 as gw
from choreo.gateway.v1 import gateway_pb2_grpc
from tests.e2e.client import EXPECTED
from tests.faults.inject import Injected
from tests.faults.load import Load
from tests.faults.system import System
from tests.streams import DLQ_STREAM
from tests.support import poll

#: Longest wait, once the load is in, for every booking to be terminal in booking's database.
SETTLE_SECONDS = 30.0
#: Then for the gateway to show the same.
GATEWAY_SECONDS = 15.0
#: Then for each poison message to reach the DLQ.
DLQ_SECONDS = 10.0

#: Every figure printed this session, repeated in pytest's terminal summary.
FIGURES: list[str] = []


def status_name(status: int) -> str:
    return gw.BookingStatus.Name(status).removeprefix("BOOKING_STATUS_")  # type: ignore[arg-type]


#: What each token must lead to: (status, cancellation reason), as booking's database spells it.
OUTCOME = {token: (status_name(status), reason) for token, (status, reason) in EXPECTED.items()}


@dataclass(frozen=True, slots=True)
class Figures:
    scenario: str
    db: str
    bookings: int
    faults: int
    confirmed: int
    cancelled: int
    pending: int
    charges: int
    dlq: int
    seconds: float

    def line(self) -> str:
        return (
            f"fault scenario={self.scenario} db={self.db} bookings={self.bookings} faults={self.faults}"
            f" confirmed={self.confirmed} cancelled={self.cancelled} pending={self.pending}"
            f" charges={self.charges} dlq={self.dlq} seconds={self.seconds:.1f}"
        )


def sample(items: object, n: int = 3) -> str:
    listed = list(items)  # type: ignore[call-overload]
    more = f" (+{len(listed) - n} more)" if len(listed) > n else ""
    return ", ".join(str(i) for i in listed[:n]) + more


async def booking_rows(system: System, user: str) -> dict[str, tuple[str, str, int]]:
    """Booking's own rows of ``user``: id -> (status, cancellation reason, amount)."""
    async with system.engine("booking") as engine, engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT booking_id, status, cancellation_reason, amount_cents"
                " FROM bookings WHERE user_id = :u"
            ),
            {"u": user},
        )
        return {r[0]: (r[1], r[2], int(r[3])) for r in rows}


async def gateway_rows(system: System, user: str) -> dict[str, tuple[str, str]]:
    """The gateway's view of ``user``'s bookings: id -> (status, cancellation reason); empty if it fails."""
    out: dict[str, tuple[str, str]] = {}
    token = ""
    try:
        async with grpc.aio.insecure_channel(system.stack.grpc_target) as channel:
            stub = gateway_pb2_grpc.BookingGatewayServiceStub(channel)
            while True:
                page = await stub.ListBookings(
                    gw.ListBookingsRequest(user_id=user, page_size=500, page_token=token), timeout=5
                )
                for b in page.bookings:
                    out[b.booking_id] = (status_name(b.status), b.cancellation_reason)
                token = page.next_page_token
                if not token:
                    return out
    except grpc.aio.AioRpcError:
        return {}


async def ledger_rows(system: System) -> tuple[list[tuple[str, bool, int]], int]:
    """The provider's charges (idempotency key, succeeded, amount) and the sum of its refunds, if any."""
    async with system.engine("ledger") as engine, engine.connect() as conn:
        tables = await conn.run_sync(lambda c: inspect(c).get_table_names())
        if "psp_charges" not in tables:
            return [], 0
        rows = await conn.execute(text("SELECT idempotency_key, succeeded, amount_cents FROM psp_charges"))
        charges = [(r[0], bool(r[1]), int(r[2])) for r in rows]
        refunds = 0
        if "psp_refunds" in tables:
            refunds = int(
                (
                    await conn.execute(text("SELECT COALESCE(SUM(amount_cents), 0) FROM psp_refunds"))
                ).scalar_one()
            )
        return charges, refunds


async def dlq_entries(system: System) -> list[dict[str, str]] | None:
    """The headers of every DLQ message (None: the DLQ stream does not exist)."""
    js = system.js
    try:
        info = await js.stream_info(DLQ_STREAM)
    except NotFoundError:
        return None
    out: list[dict[str, str]] = []
    if not info.state.messages:
        return out
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        try:
            msg = await js.get_msg(DLQ_STREAM, seq)
        except NotFoundError:
            continue
        out.append(dict(msg.headers or {}))
    return out


Rows = dict[str, tuple[str, str, int]]


async def verify(system: System, scenario: str, load: Load, injected: Injected, started: float) -> None:
    """Checks every invariant, records and prints the figure, then fails listing what broke."""
    problems: list[str] = []
    if load.refused:
        refusals = Counter(load.refused.values())
        problems.append(
            f"load: {len(load.refused)} of {load.total} creates refused (or UNAVAILABLE past"
            f" {load.create_deadline:.0f}s): {sample(refusals.items())}"
        )
    rows, pending = await check_terminal(system, load, problems)
    await check_gateway(system, load, rows, problems)
    charges = await check_ledger(system, load, rows, problems)
    entries = await check_dlq(system, injected, problems)
    await check_processes(system, injected, problems)
    figures = Figures(
        scenario=scenario,
        db=system.db,
        bookings=len(load.accepted),
        faults=injected.count,
        confirmed=sum(1 for r in rows.values() if r[0] == "CONFIRMED"),
        cancelled=sum(1 for r in rows.values() if r[0] == "CANCELLED"),
        pending=pending,
        charges=charges,
        dlq=entries,
        seconds=time.monotonic() - started,
    )
    FIGURES.append(figures.line())
    print(figures.line())
    assert not problems, f"{scenario} on {system.db}:\n  " + "\n  ".join(problems)


async def check_terminal(system: System, load: Load, problems: list[str]) -> tuple[Rows, int]:
    """Every accepted booking terminal in booking's database, as its token says, once.

    Returns booking's rows of the load's user and how many accepted ones are still PENDING.
    """
    accepted = {a.booking_id: a for a in load.accepted.values()}

    def settled(rows: Rows) -> bool:
        return all(rows.get(b, ("PENDING",))[0] != "PENDING" for b in accepted)

    rows, ok = await poll(lambda: booking_rows(system, load.user), settled, SETTLE_SECONDS)
    pending = [b for b in accepted if rows.get(b, ("PENDING",))[0] == "PENDING"]
    missing = [b for b in accepted if b not in rows]
    if missing:
        problems.append(f"booking's database lacks {len(missing)} accepted bookings: {sample(missing)}")
    if not ok:
        problems.append(
            f"booking's database: {len(pending)} of {len(accepted)} accepted bookings still PENDING"
            f" {SETTLE_SECONDS:.0f}s after the load: {sample(pending)}"
        )
    if len(rows) != len(accepted):
        problems.append(
            f"booking's database holds {len(rows)} bookings of {load.user} for {len(accepted)} accepted"
            " (a retried create made a second booking?)"
        )
    wrong = [
        f"{b} ({a.token}): {rows[b][:2]}"
        for b, a in accepted.items()
        if b in rows and rows[b][0] != "PENDING" and rows[b][:2] != OUTCOME[a.token]
    ]
    if wrong:
        problems.append(
            f"booking's database: {len(wrong)} bookings ended against their token: {sample(wrong)}"
        )
    return rows, len(pending)


async def check_gateway(system: System, load: Load, rows: Rows, problems: list[str]) -> None:
    """The gateway shows each accepted booking as booking's database has it, and no other."""
    accepted = [a.booking_id for a in load.accepted.values()]

    def mirrored(view: dict[str, tuple[str, str]]) -> bool:
        return all(view.get(b) == rows[b][:2] for b in accepted if b in rows)

    view, ok = await poll(lambda: gateway_rows(system, load.user), mirrored, GATEWAY_SECONDS)
    if not ok:
        differ = [
            f"{b}: gateway {view.get(b)}, database {rows[b][:2]}"
            for b in accepted
            if b in rows and view.get(b) != rows[b][:2]
        ]
        problems.append(
            f"gateway: {len(differ)} of {len(accepted)} bookings not as in booking's database"
            f" after {GATEWAY_SECONDS:.0f}s more: {sample(differ)}"
        )
    if len(view) > len(accepted):
        problems.append(f"gateway lists {len(view)} bookings of {load.user} for {len(accepted)} accepted")


async def check_ledger(system: System, load: Load, rows: Rows, problems: list[str]) -> int:
    """Each charge once in the provider's ledger; charges minus refunds = confirmed amounts.

    Returns the number of succeeded charges.
    """
    charges, refunds = await ledger_rows(system)
    per_key = Counter(key for key, _, _ in charges)
    succeeded = Counter(key for key, ok, _ in charges if ok)
    confirmed = {b for b, r in rows.items() if r[0] == "CONFIRMED"}
    twice = {k: n for k, n in succeeded.items() if n > 1}
    if twice:
        problems.append(f"ledger: {len(twice)} bookings charged more than once: {sample(twice.items())}")
    repeated = {k: n for k, n in per_key.items() if n > 1}
    if repeated:
        problems.append(
            f"ledger: the provider was called more than once for {len(repeated)} bookings:"
            f" {sample(repeated.items())}"
        )
    strangers = set(per_key) - {a.booking_id for a in load.accepted.values()}
    if strangers:
        problems.append(
            f"ledger: charges for {len(strangers)} keys that are no accepted booking: {sample(strangers)}"
        )
    if set(succeeded) != confirmed:
        problems.append(
            f"ledger: succeeded charges for bookings not CONFIRMED: {sample(set(succeeded) - confirmed)};"
            f" CONFIRMED bookings without a charge: {sample(confirmed - set(succeeded))}"
        )
    charged = sum(amount for _, ok, amount in charges if ok)
    owed = sum(rows[b][2] for b in confirmed)
    if charged - refunds != owed:
        problems.append(f"ledger: charges {charged} - refunds {refunds} != confirmed amounts {owed}")
    return sum(succeeded.values())


async def check_dlq(system: System, injected: Injected, problems: list[str]) -> int:
    """Nothing in the DLQ but the poison, and each poison message there. Returns the DLQ's size."""

    def poison_in(entries: list[dict[str, str]] | None) -> bool:
        return injected.poison <= {e.get("ce-id", "") for e in entries or []}

    entries, ok = await poll(lambda: dlq_entries(system), poison_in, DLQ_SECONDS if injected.poison else 0)
    if entries is None and injected.poison:
        problems.append("DLQ: the stream does not exist, so the poison was not kept")
    elif not ok:
        dead = {e.get("ce-id", "") for e in entries or []}
        problems.append(f"DLQ: poison not dead-lettered: {sample(injected.poison - dead)}")
    strays = [e for e in entries or [] if e.get("ce-id", "") not in injected.poison]
    if strays:
        kinds = Counter(
            f"{e.get('choreo-dlq-subject')} by {e.get('choreo-dlq-consumer')}:"
            f" {e.get('choreo-dlq-error', '')[:120]}"
            for e in strays
        )
        problems.append(f"DLQ: {len(strays)} entries that are not poison: {sample(kinds.items())}")
    return len(entries or [])


async def check_processes(system: System, injected: Injected, problems: list[str]) -> None:
    """No process exited on its own, none restarted but those killed; then a graceful stop of each."""
    crashed = system.stack.exited_on_their_own()
    for name, code in crashed:
        tail = system.stack.log_tail(name, 800).replace("\n", " | ")
        problems.append(f"{name} exited on its own with code {code}: ...{tail}")
    for name in system.stack.names:
        expected = 1 + injected.kills[name]
        if system.stack.starts[name] != expected:
            problems.append(f"{name} started {system.stack.starts[name]} times, expected {expected}")
    codes = await asyncio.to_thread(system.stack.stop)
    for name, code in codes.items():
        if code != 0 and all(name != c for c, _ in crashed):
            problems.append(f"{name} exited with {code} on SIGTERM (not a graceful stop)")
