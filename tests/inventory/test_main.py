"""``python -m inventory`` starts from its environment variables, reserves, and stops on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from functools import partial
from pathlib import Path

from nats.js import JetStreamContext

from choreo.bus import ensure_stream
from choreoctl.stack.natsserver import NatsServer
from tests.inventory.facts import created
from tests.streams import BOOKING
from tests.support import eventually, publish, stream_count, stream_envelopes

ROOT = Path(__file__).resolve().parents[2]


async def has(js: JetStreamContext, stream: str, n: int) -> bool:
    return await stream_count(js, stream) >= n


async def test_python_m_inventory_reserves(
    nats_server: NatsServer, js: JetStreamContext, tmp_path: Path
) -> None:
    await ensure_stream(js, BOOKING)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("INVENTORY_")},
        "INVENTORY_NATS_URL": nats_server.url,
        "INVENTORY_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'inventory.db'}",
        "INVENTORY_HEALTH_PORT": "0",
        "INVENTORY_LOG_FORMAT": "text",
        "INVENTORY_DEFAULT_CAPACITY": "1",
        "PYTHONPATH": str(ROOT),
    }
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "inventory", cwd=tmp_path, env=env)
    try:
        await publish(js, created("b-1", "room-1"))
        await publish(js, created("b-2", "room-1"))
        await eventually(partial(has, js, "INVENTORY", 2), timeout=60, message="inventory's answers")
    finally:
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 30)
    assert code == 0
    subjects = [env.subject for env in await stream_envelopes(js, "INVENTORY")]
    assert subjects == ["inventory.reserved", "inventory.reservation_failed"]
