"""One scenario: a bounded load, faults injected while it runs, then the invariants."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from tests.faults.checks import verify
from tests.faults.inject import Injected
from tests.faults.load import Load
from tests.faults.system import System

#: Bookings per scenario: enough that every fault lands mid-flow, few enough for the suite's budget.
BOOKINGS = 100
#: Longest the load and the faults together may take.
LOAD_SECONDS = 90.0

Chaos = Callable[[System, Load, Injected], Awaitable[None]]


async def run_scenario(
    system: System,
    scenario: str,
    chaos: Chaos,
    *,
    total: int = BOOKINGS,
    felt_by_clients: bool = False,
    chaos_drives_load: bool = False,
) -> None:
    """Runs the load with ``chaos`` alongside, then checks every invariant (``tests.faults.checks``).

    Args:
        felt_by_clients: The faults must make some create retry (an outage of the gateway or
            booking); else the scenario would prove nothing.
        chaos_drives_load: ``chaos`` runs the load itself (``Load.run`` over ranges of
            bookings), for faults that must fall between two waves of it.
    """
    started = time.monotonic()
    load = Load(total=total, user=f"{scenario}-{system.db}")
    injected = Injected()
    parts = [chaos(system, load, injected)]
    if not chaos_drives_load:
        parts.append(load.run(system.stack.grpc_target))
    work = asyncio.gather(*parts)
    try:
        await asyncio.wait_for(work, LOAD_SECONDS)
    except TimeoutError:
        raise AssertionError(
            f"{scenario}: the load and the faults did not finish in {LOAD_SECONDS}s"
            f" ({len(load.accepted)} of {total} bookings accepted, {injected.count} faults injected)"
        ) from None
    if felt_by_clients:
        assert load.retries, (
            f"{scenario}: no create was retried, the outage was not felt: the test proves nothing"
        )
    await verify(system, scenario, load, injected, started)
