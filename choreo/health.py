"""A tiny HTTP endpoint for liveness and readiness probes of worker services.

Workers have no web framework; this answers ``GET /healthz`` and ``GET /readyz``
with 200 when every check passes and 503 naming the failing ones otherwise.
Checks are async callables returning ``None`` (healthy) or a reason. With
``metrics``, ``GET /metrics`` serves its text (``choreo.metrics``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable

from choreo.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE

log = logging.getLogger(__name__)

Check = Callable[[], Awaitable[str | None]]


class HealthServer:
    """Serves ``/healthz`` (liveness) and ``/readyz`` (readiness).

    Args:
        host: Address to bind.
        port: Port to bind (0 picks a free one; see ``port`` after ``start``).
        checks: Named checks run on every probe.
        ready_checks: Checks run by ``/readyz`` only: conditions that should take the
            service out of traffic but must not get it restarted (a stream being re-provisioned).
        metrics: Renders ``GET /metrics`` (Prometheus text format); none: 404.
    """

    def __init__(
        self,
        host: str,
        port: int,
        checks: dict[str, Check],
        metrics: Callable[[], str] | None = None,
        ready_checks: dict[str, Check] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self._checks = checks
        self._ready_checks = ready_checks or {}
        self._metrics = metrics
        self._server: asyncio.Server | None = None

    def configure(
        self,
        checks: dict[str, Check],
        metrics: Callable[[], str] | None = None,
        ready_checks: dict[str, Check] | None = None,
    ) -> None:
        """Replaces the checks: a server started early (answering while the service starts up)
        takes the running service's checks once it is built."""
        self._checks = checks
        self._metrics = metrics
        self._ready_checks = ready_checks or {}

    async def start(self) -> None:
        """Starts listening (once: a second call does nothing)."""
        if self._server is not None:
            return
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("health endpoint on http://%s:%d/healthz", self.host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            server.close()
            await server.wait_closed()

    async def evaluate(self, *, ready: bool = True) -> dict[str, str]:
        """Failing checks by name (empty when healthy); ``ready=False``: the liveness checks only."""
        failures: dict[str, str] = {}
        checks = {**self._checks, **self._ready_checks} if ready else self._checks
        for name, check in checks.items():
            try:
                reason = await asyncio.wait_for(check(), 2.0)
            except TimeoutError:
                reason = "no answer within 2s"
            except Exception as exc:
                # The probe says which check fails; the error (hosts, SQL, paths) goes to the log.
                log.warning("health check %s failed: %r", name, exc)
                reason = f"failed ({type(exc).__name__}; the log has the details)"
            if reason:
                failures[name] = reason
        return failures

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), 5.0)
            while (await asyncio.wait_for(reader.readline(), 5.0)) not in (b"\r\n", b"\n", b""):
                pass
            parts = request.decode(errors="replace").split()
            path = parts[1].split("?")[0] if len(parts) > 1 else ""
            content_type = "application/json"
            if path in ("/healthz", "/readyz", "/livez"):
                failures = await self.evaluate(ready=path == "/readyz")
                status = "503 Service Unavailable" if failures else "200 OK"
                body = json.dumps({"status": "unavailable" if failures else "ok", "failures": failures})
            elif path == "/metrics" and self._metrics is not None:
                status, body, content_type = "200 OK", self._metrics(), METRICS_CONTENT_TYPE
            else:
                status, body = "404 Not Found", json.dumps({"error": "not found"})
            payload = body.encode()
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
                + payload
            )
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
