from __future__ import annotations

import nats

from choreoctl.bench.ceiling import run_ceiling
from choreoctl.bench.driver import LoadSpec
from choreoctl.stack.natsserver import NatsServer


async def test_ceiling_completes_every_pipeline_and_cleans_up(nats_server: NatsServer) -> None:
    assert nats_server.process is not None
    result = await run_ceiling(
        nats_server.url,
        LoadSpec("closed", duration=1.0, warmup=0.3, concurrency=8),
        other_pids={"nats-server": nats_server.process.pid},
    )
    assert result["errors"] == 0 and result["pending"] == 0
    assert result["completed"] == result["started"] > 0
    assert result["states"] == {"CONFIRMED": result["completed"]}
    assert result["completed_in_window"] > 0 and result["throughput_per_s"] > 0
    assert result["latency_ms"]["p50"] > 0
    assert set(result["processes"]) == {
        "ceiling-booking",
        "ceiling-payment",
        "ceiling-gateway",
        "nats-server",
    }
    assert all(p["peak_rss_mb"] > 0 for p in result["processes"].values())
    assert result["machine_cores_busy"] >= 0 and result["other_cores_busy"] >= 0

    nc = await nats.connect(nats_server.url)
    try:
        streams = await nc.jetstream().streams_info()
        assert [s.config.name for s in streams] == []
    finally:
        await nc.close()
