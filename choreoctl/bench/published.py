"""Counting what an outbox relay got acknowledged, for the relay scripts of the benchmark lab.

``scripts/relay_latency.py`` and ``scripts/inbox_outbox_soak.py`` drive an
``OutboxRelay`` directly; the relay reports each acknowledged fact as its
``outbox_lag`` stage (``choreo.metrics``), so a ``Stages`` that counts that stage
tells them how far the relay has got, and wakes whoever waits for progress.
"""

from __future__ import annotations

import asyncio

from choreo.metrics import Stages


class Published(Stages):
    """The relay's stage timings, counting the facts JetStream acknowledged (stage ``outbox_lag``)."""

    def __init__(self) -> None:
        super().__init__("script")
        self.acknowledged = 0
        self.progress = asyncio.Event()

    def observe(self, stage: str, seconds: float, count: int = 1) -> None:
        super().observe(stage, seconds, count)
        if stage == "outbox_lag":
            self.acknowledged += count
            self.progress.set()
