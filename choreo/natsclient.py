"""The NATS client of every choreo process.

It is nats-py's, with the header parser of ``choreo.compat.nats_headers`` (a
shim, to be removed once nats-py parses headers as fast): every process connects
through ``connect`` so that all of them get it.
"""

from __future__ import annotations

from typing import Any

from choreo.compat.nats_headers import Client

__all__ = ["Client", "connect"]


async def connect(servers: str | list[str] = "nats://localhost:4222", **options: Any) -> Client:
    """Like ``nats.connect``, returning nats-py's client with choreo's header parser."""
    nc = Client()
    await nc.connect(servers, **options)
    return nc
