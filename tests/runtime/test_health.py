"""HealthServer: 200 while every check passes, 503 naming the failing check."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from choreo.health import HealthServer
from choreo.runtime import Runtime
from choreo.service import database_check, nats_check
from choreoctl.stack.natsserver import NatsServer
from tests.support import eventually


@pytest.fixture
async def health(rt: Runtime) -> AsyncIterator[HealthServer]:
    server = HealthServer("127.0.0.1", 0, {"nats": nats_check(rt.nc), "database": database_check(rt.engine)})
    await server.start()
    yield server
    await server.stop()


async def get(server: HealthServer, path: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=5) as client:
        return await client.get(path)


async def test_healthy_then_503_naming_nats_when_the_server_dies(
    health: HealthServer, rt: Runtime, nats_server: NatsServer
) -> None:
    assert health.port != 0
    for path in ("/healthz", "/readyz"):
        response = await get(health, path)
        assert response.status_code == 200
        assert response.json() == {"status": "ok", "failures": {}}

    nats_server.kill()

    async def unhealthy() -> bool:
        return (await get(health, "/readyz")).status_code == 503

    await eventually(unhealthy, message="readiness fails")
    body = (await get(health, "/healthz")).json()
    assert body["status"] == "unavailable"
    assert list(body["failures"]) == ["nats"]
    assert "NATS" in body["failures"]["nats"]

    nats_server.restart()
    await eventually(lambda: rt.nc.is_connected, timeout=10, message="reconnected")
    assert (await get(health, "/readyz")).status_code == 200


async def test_failing_check_is_named_without_its_error_text(caplog: pytest.LogCaptureFixture) -> None:
    async def ok() -> str | None:
        return None

    async def broken() -> str | None:
        raise ConnectionRefusedError("db refused: postgresql://booking@db-7:5432, SELECT secret FROM t")

    server = HealthServer("127.0.0.1", 0, {"ok": ok, "database": broken})
    await server.start()
    try:
        response = await get(server, "/readyz?verbose=1")
        assert response.status_code == 503
        # The probe names the check and the kind of error; the text (hosts, SQL) is in the log only.
        assert response.json()["failures"] == {
            "database": "failed (ConnectionRefusedError; the log has the details)"
        }
        assert "SELECT secret" in caplog.text
        assert (await get(server, "/nope")).status_code == 404
    finally:
        await server.stop()
