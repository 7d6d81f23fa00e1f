"""Stage timings: kept per service, served on /metrics, read back by the benchmark."""

from __future__ import annotations

import httpx
import pytest
from nats.js import JetStreamContext

from choreo.health import HealthServer
from choreo.metrics import Stages, parse
from choreo.runtime import Runtime
from tests.runtime.harness import (
    DURABLE,
    Probe,
    consumer_for,
    consumer_settled,
    envelope_for,
    outbox_empty,
    running,
)
from tests.streams import BOOKING_STREAM
from tests.support import eventually, publish


def test_totals_render_as_a_prometheus_summary_and_parse_back() -> None:
    stages = Stages("booking")
    stages.observe("handler", 0.25)
    stages.observe("consumer_lag", 0.5, count=4)
    with stages.timed("handler"):
        pass
    with pytest.raises(ValueError), stages.timed("prepare"):
        raise ValueError("timed anyway")
    text = stages.render()
    assert "# TYPE choreo_stage_seconds summary" in text
    assert 'choreo_stage_seconds_count{service="booking",stage="consumer_lag"} 4' in text
    back = parse(text)["booking"]
    assert back["consumer_lag"] == (0.5, 4)
    assert back["handler"][1] == 2 and back["handler"][0] >= 0.25
    assert back["prepare"][1] == 1
    assert back == {k: (pytest.approx(v[0], abs=1e-6), v[1]) for k, v in stages.totals().items()}


async def test_a_consumer_and_its_relay_time_every_stage_and_serve_them(
    rt: Runtime, js: JetStreamContext, probe: Probe
) -> None:
    for i in range(5):
        await publish(js, envelope_for(f"b-{i}"))
    consumer = consumer_for(rt, probe.routes(with_prepare=True))
    async with running(consumer, rt.relay):
        await eventually(lambda: consumer.processed == 5, message="five handled")
        await eventually(lambda: consumer_settled(js, BOOKING_STREAM, DURABLE), message="all acked")
        await eventually(lambda: outbox_empty(rt.engine), message="facts published")

    totals = rt.stages.totals()
    for stage in ("consumer_lag", "prepare", "handler", "outbox_lag"):
        assert totals[stage][1] == 5, stage
    for stage in ("consume_transaction", "consume_commit"):
        assert 1 <= totals[stage][1] <= 5, stage
    assert totals["consumer_lag"][0] > 0 and totals["outbox_lag"][0] > 0
    assert totals["consume_commit"][0] <= totals["consume_transaction"][0]

    server = HealthServer("127.0.0.1", 0, {}, metrics=rt.stages.render)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=5) as client:
            response = await client.get("/metrics")
    finally:
        await server.stop()
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    served = parse(response.text)[rt.settings.service_name]
    assert {stage: count for stage, (_, count) in served.items()} == {s: c for s, (_, c) in totals.items()}
