"""A NATS connection as one user that records the permission errors the server sends it.

Shared by the permission tests (tests/k8s/test_permissions.py, tests/cli/test_nats_users.py):
a refused publish or subscribe does not raise in nats-py, it arrives as an async error.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from nats.aio.client import Client as NATS


@dataclass
class Session:
    """A connection as one user, recording the errors the server sends it."""

    nc: NATS
    errors: list[str] = field(default_factory=list)

    async def denied(self, what: str, timeout: float = 5.0) -> bool:
        """Whether the server reported a permissions violation mentioning ``what``."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while loop.time() < end:
            # nats-py lower-cases the server's error text.
            if any("permissions violation" in e.lower() and what.lower() in e.lower() for e in self.errors):
                return True
            await asyncio.sleep(0.02)
        return False
