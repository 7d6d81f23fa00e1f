"""The faults: each injector does one thing to a running system and counts it in ``Injected``.

Fault windows (how long a server stays frozen or down) are durations of the
fault itself, not waits for something to happen; everything that waits for a
condition is bounded and says what did not happen.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter
from dataclasses import dataclass, field

import asyncpg
from nats.js.errors import NotFoundError

from choreo.envelope import Envelope
from tests.conftest import PG_URL
from tests.faults.system import DATABASES, System
from tests.streams import BOOKING_CREATED
from tests.support import publish

#: Field 1 (booking_id, length-delimited) claims 127 bytes but the body ends: not a protobuf message.
GARBAGE_BODY = b"\x0a\x7fnot protobuf"
UNKNOWN_TYPE = "choreo.booking.v1.NoSuchEvent"


#: Terminates every connection to the databases named in $1; returns how many it ended.
_TERMINATE = (
    "SELECT count(*) FILTER (WHERE t.ok) FROM (SELECT pg_terminate_backend(pid) AS ok"
    " FROM pg_stat_activity WHERE datname = ANY($1::text[]) AND pid <> pg_backend_pid()) AS t"
)


@dataclass
class Injected:
    """What a scenario did to the system.

    Attributes:
        count: Faults injected (kills, freezes, deletions, terminated backends, poison messages).
        kills: SIGKILLs per process name (each then restarted once).
        poison: ``ce-id`` of every poison message published (the only facts allowed in the DLQ).
    """

    count: int = 0
    kills: Counter[str] = field(default_factory=Counter)
    poison: set[str] = field(default_factory=set)


async def kill_and_restart(system: System, injected: Injected, *names: str) -> None:
    """SIGKILL service processes at once, then start them again (their start-up time is the outage)."""
    for name in names:
        system.stack.kill(name)
        injected.count += 1
        injected.kills[name] += 1
    await system.restart(*names)


async def freeze_nats(system: System, injected: Injected, seconds: float) -> None:
    """SIGSTOP the nats-server for ``seconds``, then SIGCONT: every connection hangs, none drops."""
    process = system.nats.process
    assert process is not None and process.poll() is None, "nats-server is not running"
    os.kill(process.pid, signal.SIGSTOP)
    injected.count += 1
    try:
        await asyncio.sleep(seconds)
    finally:
        os.kill(process.pid, signal.SIGCONT)


async def kill_nats(system: System, injected: Injected, down_seconds: float) -> None:
    """SIGKILL the nats-server, keep it down ``down_seconds``, restart it on the same port and store."""
    system.nats.kill()
    injected.count += 1
    await asyncio.sleep(down_seconds)
    await asyncio.to_thread(system.nats.start)


async def delete_streams(system: System, injected: Injected, *names: str) -> None:
    """Deletes JetStream streams under the running services."""
    for name in names:
        try:
            await system.js.delete_stream(name)
        except NotFoundError:
            raise AssertionError(f"stream {name} to delete does not exist") from None
        injected.count += 1


async def terminate_backends(system: System, injected: Injected, seconds: float, every: float) -> None:
    """``pg_terminate_backend`` on every connection to the system's databases, every ``every`` s."""
    names = [system.urls[db].rsplit("/", 1)[1] for db in DATABASES]
    admin = await asyncpg.connect(PG_URL, timeout=5)
    try:
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        while True:
            injected.count += int(await admin.fetchval(_TERMINATE, names))
            if loop.time() >= end:
                return
            await asyncio.sleep(every)
    finally:
        await admin.close()


async def refuse_connections(system: System, injected: Injected, seconds: float) -> None:
    """A PostgreSQL outage: every database of the system refuses new connections and loses its
    current ones for ``seconds`` (``ALLOW_CONNECTIONS false`` and ``pg_terminate_backend``)."""
    names = [system.urls[db].rsplit("/", 1)[1] for db in DATABASES]
    admin = await asyncpg.connect(PG_URL, timeout=5)
    try:
        for name in names:
            await admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
        try:
            injected.count += int(await admin.fetchval(_TERMINATE, names))
            await asyncio.sleep(seconds)
        finally:
            for name in names:
                await admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
    finally:
        await admin.close()


async def publish_poison(system: System, injected: Injected) -> None:
    """Two poison facts on ``booking.created``: CloudEvents headers and a garbage body; an unknown type."""
    garbage = Envelope(
        id=f"poison-body-{os.urandom(4).hex()}",
        type="choreo.booking.v1.BookingCreated",
        source="fault-suite",
        subject=BOOKING_CREATED,
        data=GARBAGE_BODY,
        correlation_id="poison",
    )
    unknown = Envelope(
        id=f"poison-type-{os.urandom(4).hex()}",
        type=UNKNOWN_TYPE,
        source="fault-suite",
        subject=BOOKING_CREATED,
        data=b"",
        correlation_id="poison",
    )
    for env in (garbage, unknown):
        await publish(system.js, env)
        injected.count += 1
        injected.poison.add(env.id)
