"""The saga's invariants hold whatever order its facts arrive in, and however often.

Hypothesis draws bookings (with or without a resource, paid or declined, cancelled by
their user at some moment or not), the resources' capacities, and then the whole
schedule: which waiting delivery runs next, which fact is delivered a second time,
when each user's cancel and each payment timeout happen. The real handlers of booking,
payment and inventory run on their real schemas (``tests.saga.bus``), with the
simulated provider's real ledger. Once nothing is left to deliver:

- every booking is settled (CONFIRMED or CANCELLED), and none was dead-lettered;
- units reserved for a resource = units of its CONFIRMED bookings (no PENDING is left),
  and never more than its capacity;
- in the provider's ledger, each booking is charged at most once and refunded at most
  once, and charges - refunds = the amounts of the CONFIRMED bookings;
- each compensation (BookingCancelled, InventoryReleased, PaymentRefunded) and each
  payment outcome is published at most once per booking; a sold-out booking is never charged.

``CHOREO_SAGA_EXAMPLES`` sets how many schedules to try (default 40: about 8 s); the totals
tried are printed at the end of the run (``pytest -s``).
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, text

from booking.cancel import CancelRequest, cancel_booking
from booking.create import CreateRequest, create_bookings
from booking.migrations import MIGRATIONS as BOOKING_MIGRATIONS
from booking.tables import bookings
from booking.topology import topology as booking_topology
from choreo.booking.v1 import commands_pb2
from choreo.booking.v1 import events_pb2 as booking_events
from choreo.db import make_engine
from choreo.envelope import Envelope
from choreo.ids import new_id
from choreo.sealing import TokenOpener, TokenSealer, parse_private_keys, parse_public_key
from inventory.capacity import set_capacity
from inventory.migrations import MIGRATIONS as INVENTORY_MIGRATIONS
from inventory.topology import topology as inventory_topology
from payment.migrations import MIGRATIONS as PAYMENT_MIGRATIONS
from payment.records import Bookings
from payment.simulator import SimulatedProvider
from payment.topology import topology as payment_topology
from tests.saga.bus import Bus, Consumer
from tests.support import TOKEN_PRIVATE_KEY, TOKEN_PUBLIC_KEY, prepared_schema

EXAMPLES = int(os.environ.get("CHOREO_SAGA_EXAMPLES", "40"))
#: Shrinking a failure to a minimal schedule takes minutes (``CHOREO_SAGA_SHRINK=1`` to ask for it);
#: without it the failing schedule is reported as drawn.
PHASES = (
    tuple(Phase) if os.environ.get("CHOREO_SAGA_SHRINK") else (Phase.explicit, Phase.reuse, Phase.generate)
)
RESOURCES = ("r1", "r2")
#: What was tried, over the whole run (printed at the end, for the closing figures).
TRIED: Counter[str] = Counter()


@dataclass(frozen=True)
class Plan:
    token: str
    resource: str
    quantity: int
    #: When the user cancels (a step index), or never.
    cancel_at: int | None
    #: The payment timeout fires at a random moment (else only after everything else).
    times_out: bool


plans = st.builds(
    Plan,
    token=st.sampled_from(["tok_visa", "tok_visa", "tok_chargeDeclined"]),
    resource=st.sampled_from(["", *RESOURCES]),
    quantity=st.integers(1, 3),
    cancel_at=st.none() | st.integers(0, 40),
    times_out=st.integers(0, 3).map(lambda n: n == 0),
)


@pytest.fixture(scope="module")
def schemas(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return {
        "booking": prepared_schema(tmp_path_factory, BOOKING_MIGRATIONS, "booking"),
        "payment": prepared_schema(tmp_path_factory, PAYMENT_MIGRATIONS, "payment"),
        "inventory": prepared_schema(tmp_path_factory, INVENTORY_MIGRATIONS, "inventory"),
    }


@pytest.fixture(scope="module", autouse=True)
def report() -> object:
    yield None
    print(
        f"\nsaga invariants: {TRIED['examples']} schedules, {TRIED['bookings']} bookings, "
        f"{TRIED['deliveries']} deliveries ({TRIED['duplicates']} duplicates, {TRIED['retries']} retried), "
        f"{TRIED['cancels']} user cancels, {TRIED['confirmed']} confirmed, {TRIED['cancelled']} cancelled, "
        f"{TRIED['charges']} charges, {TRIED['refunds']} refunds, {TRIED['releases']} releases "
        f"({dict(TRIED.most_common())})"
    )


@settings(
    max_examples=EXAMPLES,
    phases=PHASES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    booked=st.lists(plans, min_size=1, max_size=6),
    capacities=st.tuples(st.integers(0, 4), st.integers(1, 6)),
    data=st.data(),
)
def test_the_invariants_hold_in_any_order(
    schemas: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
    booked: list[Plan],
    capacities: tuple[int, int],
    data: st.DataObject,
) -> None:
    folder = tmp_path_factory.mktemp("saga")
    asyncio.run(run_schedule(folder, schemas, booked, dict(zip(RESOURCES, capacities, strict=True)), data))


async def run_schedule(
    folder: Path, schemas: dict[str, Path], booked: list[Plan], capacity: dict[str, int], data: st.DataObject
) -> None:
    engines = {}
    for service, schema in schemas.items():
        shutil.copyfile(schema, folder / f"{service}.db")
        engines[service] = make_engine(f"sqlite+aiosqlite:///{folder / service}.db", synchronous="NORMAL")
    provider = await SimulatedProvider.open(f"sqlite+aiosqlite:///{folder / 'ledger.db'}")
    payment_bookings = Bookings(engines["payment"])
    opener = TokenOpener(parse_private_keys(TOKEN_PRIVATE_KEY))
    sealer = TokenSealer(parse_public_key(TOKEN_PUBLIC_KEY))
    bus = Bus.of(
        engines,
        [
            # A timeout of 0: each booking's timeout fires when the schedule delivers it.
            booking_topology(0),
            payment_topology(provider, opener, payment_bookings),
            inventory_topology(default_capacity=100),
        ],
    )
    try:
        async with engines["inventory"].begin() as conn:
            for resource, units in capacity.items():
                await set_capacity(conn, resource, units, source="inventory")
        ids: dict[int, str] = {}

        def held_timeout(consumer: Consumer, env: Envelope) -> bool:
            # A timeout that does not fire mid-saga fires after everything else (the booking settled).
            if consumer.durable != "booking-timeouts":
                return False
            booking_id = env.decode(booking_events.BookingCreated).booking_id
            return not next(p.times_out for i, p in enumerate(booked) if ids.get(i) == booking_id)

        async def create(i: int, plan: Plan) -> None:
            command = commands_pb2.CreateBookingCommand(
                user_id="u1",
                amount_cents=1000 + i,
                currency="EUR",
                payment_token=plan.token,
                resource_id=plan.resource,
                quantity=plan.quantity if plan.resource else 0,
            )
            async with engines["booking"].begin() as conn:
                [reply] = await create_bookings(
                    conn, [CreateRequest(command, new_id(), new_id())], "booking", sealer
                )
            ids[i] = reply.booking.booking_id
            if plan.cancel_at is not None:
                bus.pending.insert(min(plan.cancel_at, len(bus.pending)), make_cancel(i))

        def make_cancel(i: int):  # type: ignore[no-untyped-def]
            async def cancel() -> None:
                command = commands_pb2.CancelBookingCommand(booking_id=ids[i], user_id="u1")
                async with engines["booking"].begin() as conn:
                    await cancel_booking(conn, CancelRequest(command, new_id()), "booking")
                TRIED["cancels"] += 1

            return cancel

        for i, plan in enumerate(booked):
            bus.pending.append(lambda i=i, plan=plan: create(i, plan))
        await bus.relay()
        original_publish = bus.publish
        bus.publish = lambda env, hold=None: original_publish(env, hold=held_timeout)  # type: ignore[method-assign]
        while bus.pending or bus.held:
            if not bus.pending:
                bus.release_held()
            assert bus.steps < 3000, f"the saga did not settle: {len(bus.pending)} waiting"
            index = data.draw(st.integers(0, len(bus.pending) - 1), label="next")
            again = data.draw(st.integers(0, 7), label="duplicate") == 0
            await bus.step(index, again=again)
        await check(bus, engines, folder, booked, ids, capacity)
    finally:
        await provider.close()
        for engine in engines.values():
            await engine.dispose()


async def check(
    bus: Bus,
    engines: dict[str, object],
    folder: Path,
    booked: list[Plan],
    ids: dict[int, str],
    capacity: dict[str, int],
) -> None:
    assert bus.dead == [], f"dead-lettered: {bus.dead}"
    async with engines["booking"].connect() as conn:  # type: ignore[attr-defined]
        rows = {r.booking_id: r for r in (await conn.execute(select(bookings))).all()}
    async with engines["inventory"].connect() as conn:  # type: ignore[attr-defined]
        reserved = dict((await conn.execute(text("SELECT resource_id, reserved FROM resources"))).all())
    ledger = make_engine(f"sqlite+aiosqlite:///{folder / 'ledger.db'}")
    async with ledger.connect() as conn:
        charges = (
            await conn.execute(text("SELECT idempotency_key, amount_cents FROM psp_charges WHERE succeeded"))
        ).all()
        refunds = (
            await conn.execute(
                text(
                    "SELECT c.idempotency_key, r.amount_cents FROM psp_refunds r "
                    "JOIN psp_charges c ON c.charge_id = r.charge_id"
                )
            )
        ).all()
    await ledger.dispose()

    statuses = Counter(r.status for r in rows.values())
    assert statuses["PENDING"] == 0, "a booking never settled"
    confirmed = [r for r in rows.values() if r.status == "CONFIRMED"]
    for resource in RESOURCES:
        units = sum(r.quantity for r in confirmed if r.resource_id == resource)
        assert reserved.get(resource, 0) == units, f"{resource}: reserved {reserved.get(resource)} != {units}"
        assert units <= capacity[resource], f"{resource} over-reserved"
    charged = Counter(key for key, _ in charges)
    refunded = Counter(key for key, _ in refunds)
    assert max(charged.values(), default=0) <= 1, "charged twice"
    assert max(refunded.values(), default=0) <= 1, "refunded twice"
    net = sum(cents for _, cents in charges) - sum(cents for _, cents in refunds)
    assert net == sum(r.amount_cents for r in confirmed), "charges - refunds != confirmed amounts"
    for name in (
        "BookingCancelled",
        "BookingConfirmed",
        "InventoryReleased",
        "InventoryReserved",
        "PaymentRefunded",
    ):
        per_booking = Counter(env.correlation_id for env in bus.of_type(name))
        assert max(per_booking.values(), default=0) <= 1, f"{name} published twice for one booking"
    outcomes = Counter(
        e.correlation_id for t in ("PaymentSucceeded", "PaymentFailed") for e in bus.of_type(t)
    )
    assert max(outcomes.values(), default=0) <= 1, "two payment outcomes for one booking"
    for r in rows.values():
        if r.cancellation_reason == "sold_out":
            assert charged[r.booking_id] == 0, "a sold-out booking was charged"

    TRIED["examples"] += 1
    TRIED["bookings"] += len(booked)
    TRIED["deliveries"] += bus.steps
    TRIED["duplicates"] += bus.duplicates
    TRIED["retries"] += bus.retries
    TRIED["charges"] += len(charges)
    TRIED["refunds"] += len(refunds)
    TRIED["releases"] += len(bus.of_type("InventoryReleased"))
    TRIED["confirmed"] += statuses["CONFIRMED"]
    TRIED["cancelled"] += statuses["CANCELLED"]
    for r in rows.values():
        if r.cancellation_reason:
            TRIED[f"reason:{r.cancellation_reason}"] += 1
