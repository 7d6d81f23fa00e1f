"""The HTTP server: uvicorn serving the gateway's app (``gateway.api.http_api``) as a component.

It runs in the gateway's event loop, next to the gRPC server; the service's
``run_main`` owns the signals and stops it in order.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Iterator, Mapping
from typing import Any

import uvicorn
from fastapi import FastAPI

from gateway.application.core import GatewayCore

log = logging.getLogger(__name__)


def _bind(host: str, port: int) -> socket.socket:
    """A listening-ready socket; raises ``OSError`` (uvicorn's own would exit the process)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


class _Uvicorn(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The service's run_main owns SIGTERM/SIGINT and stops every component in order.
        yield


class HttpServer:
    """Uvicorn serving the app, as a service component.

    The socket is bound on construction (a bad port fails the start-up; 0 picks
    a free one, see ``port``).

    Args:
        app: The ASGI application.
        core: Told to end waits on shutdown.
        host: Address to bind.
        port: Port to bind.
        grace: Seconds open requests get on shutdown.
        options: More ``uvicorn.Config`` arguments (limits, TLS; ``gateway.api.server_limits``,
            ``gateway.api.tls``).
    """

    def __init__(
        self,
        app: FastAPI,
        core: GatewayCore,
        *,
        host: str,
        port: int,
        grace: float,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        self._core = core
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_config=None,
            access_log=False,
            lifespan="off",
            server_header=False,
            timeout_graceful_shutdown=max(1, int(grace)),
            **(options or {}),
        )
        self._server = _Uvicorn(config)
        self._socket = _bind(host, port)
        self.port: int = self._socket.getsockname()[1]

    async def run(self) -> None:
        log.info("HTTP on port %d", self.port)
        try:
            await self._server.serve(sockets=[self._socket])
        finally:
            self.close()
            log.info("HTTP stopped")

    def stop(self) -> None:
        """Stops accepting connections; open requests finish, waits end now."""
        self._core.shut_down()
        self._server.should_exit = True

    def close(self) -> None:
        """Releases the socket (also when the server never ran)."""
        self._socket.close()
