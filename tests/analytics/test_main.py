"""``python -m analytics`` starts from its environment variables, answers, and stops on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from nats.aio.client import Client as NATS
from nats.errors import NoRespondersError

from choreoctl.stack.natsserver import NatsServer
from tests.analytics.facts import ask

ROOT = Path(__file__).resolve().parents[2]


async def test_python_m_analytics_serves_the_stats(nats_server: NatsServer, nc: NATS, tmp_path: Path) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ANALYTICS_")},
        "ANALYTICS_NATS_URL": nats_server.url,
        "ANALYTICS_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'analytics.db'}",
        "ANALYTICS_HEALTH_PORT": "0",
        "ANALYTICS_LOG_FORMAT": "text",
        "PYTHONPATH": str(ROOT),
    }
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "analytics", cwd=tmp_path, env=env)
    try:
        reply = None
        for _ in range(300):
            try:
                reply = await ask(nc)
                break
            except NoRespondersError:
                assert proc.returncode is None, "python -m analytics exited"
                await asyncio.sleep(0.1)
        assert reply is not None and reply.WhichOneof("result") == "stats"
        assert reply.stats.bookings_created == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 30)
    assert code == 0
