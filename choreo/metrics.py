"""Where a service's time goes, stage by stage, served as Prometheus metrics.

Each service keeps one ``Stages`` (made in its ``build``, passed to the parts
it times) and serves it on ``GET /metrics`` in Prometheus' text format: one
summary, ``choreo_stage_seconds``, with a ``_sum`` and a ``_count`` per stage.
A scrape before and after a window gives the time each stage took in it, per
transaction (``_sum`` / ``_count``) or per booking (``_sum`` / bookings); that
is how ``choreo bench`` splits the services' own time (database transaction,
commit, handler, consumer lag, outbox lag), which timestamps on the facts
cannot show.

Stages (all in seconds):

- ``consumer_lag``: a fact stored in JetStream -> its consumer starts on it (one per fact).
- ``prepare``: a route's step outside the transaction, e.g. the provider call (one per fact).
- ``handler``: a route's handler, inside the transaction (one per fact).
- ``consume_transaction``: a batch's transaction, begin to commit (one per batch).
- ``consume_commit``: the commit alone (one per batch).
- ``command_transaction``: a batch of commands' transaction (one per batch).
- ``outbox_lag``: a fact's outbox row inserted -> JetStream acknowledged it (one per fact).
- ``command_request`` (gateway): a command sent -> its reply received (one per command).
- ``projection_transaction`` (gateway): a read-model transaction (one per commit).

Gauges (``set_gauge``) are served next to it as ``choreo_<name>{service=...}``,
e.g. ``choreo_outbox_parked_rows``: outbox rows parked as unpublishable
(``choreo.outbox``; alert when it is above zero), and
``choreo_outbox_oldest_unpublished_seconds``: age of the oldest fact waiting to
be published. Counters (``count``) carry labels of their own, e.g.
``choreo_outbox_publish_refused_total{service=...,stream=...}``: facts a full
stream refused (kept by the outbox, retried), and
``choreo_dlq_refused_total{service=...,stream=...,consumer=...}``: dead letters the
DLQ stream refused (the fact is kept and retried). Alert rules: docs/alerts.md.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

#: Content type of the text exposition format.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Stages:
    """Running totals of time per stage for one service.

    Args:
        service: The ``service`` label on every series.
    """

    def __init__(self, service: str) -> None:
        self._service = service
        self._sums: dict[str, float] = {}
        self._counts: dict[str, int] = {}
        self._gauges: dict[str, tuple[float, str]] = {}
        self._counters: dict[str, tuple[dict[tuple[tuple[str, str], ...], float], str]] = {}

    def set_gauge(self, name: str, value: float, help_text: str) -> None:
        """Sets the gauge ``choreo_<name>`` (served by ``render``)."""
        self._gauges[name] = (value, help_text)

    def count(self, name: str, help_text: str, amount: float = 1, **labels: str) -> None:
        """Adds ``amount`` to the counter ``choreo_<name>`` with these labels (served by ``render``)."""
        series, _ = self._counters.setdefault(name, ({}, help_text))
        key = tuple(sorted(labels.items()))
        series[key] = series.get(key, 0.0) + amount

    def counter(self, name: str, **labels: str) -> float:
        """The counter's value for these labels (0 before its first ``count``)."""
        series, _ = self._counters.get(name, ({}, ""))
        return series.get(tuple(sorted(labels.items())), 0.0)

    def gauge(self, name: str) -> float | None:
        """The gauge's last value, or None before it was first set."""
        value = self._gauges.get(name)
        return None if value is None else value[0]

    def observe(self, stage: str, seconds: float, count: int = 1) -> None:
        """Adds ``seconds`` spent in ``stage`` over ``count`` occurrences."""
        self._sums[stage] = self._sums.get(stage, 0.0) + seconds
        self._counts[stage] = self._counts.get(stage, 0) + count

    @contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        """Times the block as one occurrence of ``stage`` (also when it raises)."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.observe(stage, time.perf_counter() - started)

    def totals(self) -> dict[str, tuple[float, int]]:
        """Stage -> (seconds, occurrences) so far."""
        return {stage: (self._sums[stage], self._counts[stage]) for stage in self._sums}

    def render(self) -> str:
        """The summary in Prometheus' text exposition format."""
        lines = [
            "# HELP choreo_stage_seconds Time spent in each stage of handling facts and commands.",
            "# TYPE choreo_stage_seconds summary",
        ]
        for stage in sorted(self._sums):
            labels = f'service="{self._service}",stage="{stage}"'
            lines.append(f"choreo_stage_seconds_sum{{{labels}}} {self._sums[stage]:.6f}")
            lines.append(f"choreo_stage_seconds_count{{{labels}}} {self._counts[stage]}")
        for name, (value, help_text) in sorted(self._gauges.items()):
            lines.append(f"# HELP choreo_{name} {help_text}")
            lines.append(f"# TYPE choreo_{name} gauge")
            lines.append(f'choreo_{name}{{service="{self._service}"}} {value:g}')
        for name, (series, help_text) in sorted(self._counters.items()):
            lines.append(f"# HELP choreo_{name} {help_text}")
            lines.append(f"# TYPE choreo_{name} counter")
            for key, total in sorted(series.items()):
                labels = ",".join(f'{k}="{v}"' for k, v in (("service", self._service), *key))
                lines.append(f"choreo_{name}{{{labels}}} {total:g}")
        return "\n".join(lines) + "\n"


def parse(text: str) -> dict[str, dict[str, tuple[float, int]]]:
    """Reads ``render``'s output back: service -> stage -> (seconds, occurrences)."""
    sums: dict[tuple[str, str], float] = {}
    counts: dict[tuple[str, str], int] = {}
    for line in text.splitlines():
        if not line.startswith("choreo_stage_seconds_"):
            continue
        series, _, value = line.rpartition(" ")
        name, _, label_text = series.partition("{")
        labels = dict(item.split("=", 1) for item in label_text.rstrip("}").split(",") if "=" in item)
        key = (labels.get("service", "").strip('"'), labels.get("stage", "").strip('"'))
        if name.endswith("_sum"):
            sums[key] = float(value)
        elif name.endswith("_count"):
            counts[key] = int(float(value))
    result: dict[str, dict[str, tuple[float, int]]] = {}
    for (service, stage), seconds in sums.items():
        result.setdefault(service, {})[stage] = (seconds, counts.get((service, stage), 0))
    return result
