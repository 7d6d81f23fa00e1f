"""The benchmark report: the targets it is judged against, and its table form.

The JSON report (``run_bench``'s result) is the reference; the table is that
JSON made readable. Its main keys: ``e2e`` (gRPC closed loop), ``e2e_open``,
``e2e_low_load``, ``http``, ``ceiling``, ``ratio``, ``settings``, ``scale``,
``replay``, ``durability``, ``machine``, ``targets``.
"""

from __future__ import annotations

from typing import Any

from choreoctl.bench.stages import STAGES


def evaluate_targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of the issue, the figure measured for it, and whether it is met (``None``: n/a)."""
    targets: list[dict[str, Any]] = []

    def add(name: str, measured: Any, met: bool | None) -> None:
        targets.append({"target": name, "measured": measured, "met": met})

    e2e = report.get("e2e")
    if e2e:
        clean = e2e["errors"] == 0 and e2e["pending"] == 0 and report.get("pending_in_read_model", 0) == 0
        add(
            ">= 1,500 bookings/s end to end (gRPC), no errors, none left PENDING",
            f"{e2e['throughput_per_s']:,.0f}/s, {e2e['errors']} errors, {e2e['pending']} pending",
            e2e["throughput_per_s"] >= 1500 and clean,
        )
    low = report.get("e2e_low_load")
    if low:
        p50 = low["latency_ms"]["p50"]
        floor = (report.get("ceiling_low_load") or {}).get("latency_ms", {}).get("p50")
        beside = f" (raw NATS pipeline, same hops: {floor:.1f} ms)" if floor is not None else ""
        add(
            f"p50 create->CONFIRMED <= 5 ms at low load ({low['rate']:g}/s)",
            f"{p50:.1f} ms{beside}",
            p50 <= 5.0,
        )
    loaded = report.get("e2e_open")
    if loaded:
        p99 = loaded["latency_ms"]["p99"]
        at = f"at {loaded['rate']:g}/s" + ("" if loaded["rate"] == 1000 else " (target is at 1,000/s)")
        add(f"p99 <= 50 ms {at}", f"{p99:.1f} ms", p99 <= 50.0 if loaded["rate"] >= 1000 else None)
    if report.get("ratio") is not None:
        add("end-to-end / raw ceiling >= 0.3", f"{report['ratio']:.2f}", report["ratio"] >= 0.3)
    replay = report.get("replay")
    if replay and replay.get("events_per_s") is not None:
        rate = replay["events_per_s"]
        add(">= 20,000 events/s read-model rebuild", f"{rate:,.0f} events/s", rate >= 20_000)
    memory = (report.get("scale") or {}).get("memory")
    if memory:
        changes = {n: p["change"] for n, p in memory["processes"].items() if p["change"] is not None}
        worst = max(changes.items(), key=lambda kv: abs(kv[1])) if changes else ("-", 0.0)
        add(
            f"memory flat (+-10%) from {memory['from_stored']:,} to {memory['to_stored']:,} stored bookings",
            f"largest change {worst[1]:+.0%} ({worst[0]})",
            all(abs(c) <= 0.10 for c in changes.values()),
        )
    return targets


def _row(cells: list[str], widths: list[int]) -> str:
    return "  ".join(
        c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
    )


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return [_row(header, widths), _row(["-" * w for w in widths], widths), *(_row(r, widths) for r in rows)]


def _load_row(name: str, figures: dict[str, Any]) -> list[str]:
    lat = figures["latency_ms"]
    load = f"{figures['concurrency']} clients" if figures["mode"] == "closed" else f"{figures['rate']:g}/s"
    return [
        name,
        load,
        f"{figures['throughput_per_s']:,.0f}",
        *(f"{lat[k]:.1f}" for k in ("p50", "p95", "p99", "max")),
        f"{figures['completed']:,}",
        str(figures["errors"]),
        str(figures["pending"]),
        f"{figures['other_cores_busy']:.2f}" if "other_cores_busy" in figures else "-",
    ]


def format_report(report: dict[str, Any]) -> str:
    """The report as plain-text tables."""
    lines: list[str] = []
    m = report.get("machine", {})
    lines.append(
        f"machine: {m.get('cpu')}, {m.get('cores')} cores, {m.get('memory_gb')} GB, Python {m.get('python')}"
    )
    lines.append(f"         {m.get('nats_server')}; load average before {m.get('load_average')}")
    settings = report.get("settings", {})
    lines.append(f"JetStream sync_interval: {settings.get('jetstream', {}).get('sync_interval')}")
    for name, db in settings.get("databases", {}).items():
        lines.append(f"database {name}: " + ", ".join(f"{k}={v}" for k, v in db.items()))
    lines.append("")
    rows = []
    for key, name in (
        ("ceiling", "raw ceiling (nats-py)"),
        ("ceiling_low_load", "raw ceiling low load"),
        ("e2e", "gRPC closed loop"),
        ("e2e_open", "gRPC open loop"),
        ("e2e_low_load", "gRPC low load"),
        ("http", "HTTP closed loop"),
    ):
        if key in report:
            rows.append(_load_row(name, report[key]))
    header = [
        "run",
        "load",
        "per s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "max ms",
        "done",
        "errors",
        "pending",
        "other",
    ]
    lines += _table(header, rows)
    lines.append("(other: cores used by programs outside the system and the benchmark during the window)")
    if report.get("ratio") is not None:
        lines.append(f"end-to-end / ceiling: {report['ratio']:.2f}")
    lines.append(f"bookings PENDING on the read side after the runs: {report.get('pending_in_read_model')}")
    floor = report.get("grpc_floor")
    if floor:
        lines.append(
            f"gRPC floor (grpc.aio, an empty GetBooking, {floor['concurrency']} in flight): "
            f"{floor['calls_per_s']:,.0f} calls/s; CPU per call: "
            f"server {floor['server_cpu_us_per_call']} us, client {floor['client_cpu_us_per_call']} us "
            "(a booking makes 2 calls)"
        )
    lines += _processes_section(report)
    lines += _stages_section(report)
    lines += _service_stages_section(report)
    lines += _scale_section(report)
    lines += _profile_section(report)
    replay = report.get("replay")
    if replay:
        lines.append("")
        lines.append(
            f"replay: {replay['events']:,} events in {replay['seconds']:.1f}s = "
            f"{replay['events_per_s'] or 0:,.0f} events/s "
            f"(gateway peak RSS {replay['gateway_peak_rss_mb']} MB)"
        )
    durability = (report.get("durability") or {}).get("fsync_always")
    if durability:
        lines.append("")
        lines.append(
            f"with fsync on every JetStream write ({durability['settings']['jetstream']['sync_interval']}):"
        )
        rows = [
            _load_row(n, durability[k]) for k, n in (("ceiling", "raw ceiling"), ("e2e", "gRPC closed loop"))
        ]
        lines += _table(header, rows)
        if durability.get("ratio") is not None:
            lines.append(f"end-to-end / ceiling: {durability['ratio']:.2f}")
    lines.append("")
    lines.append("targets:")
    for t in report.get("targets", []):
        mark = {True: "met", False: "NOT MET", None: "n/a"}[t["met"]]
        lines.append(f"  [{mark:>7}] {t['target']}: {t['measured']}")
    return "\n".join(lines)


def _processes_section(report: dict[str, Any]) -> list[str]:
    e2e = report.get("e2e")
    if not e2e or not e2e.get("processes"):
        return []
    rows = [
        [
            name,
            f"{p['cores']:.2f}",
            f"{p['cpu_ms_per_item']:.3f}" if p["cpu_ms_per_item"] is not None else "-",
            f"{p['rss_mb']:.0f}",
            f"{p['peak_rss_mb']:.0f}",
        ]
        for name, p in e2e["processes"].items()
    ]
    lines = ["", "per process, gRPC closed loop (CPU ms per completed booking):"]
    lines += _table(["process", "cores", "CPU ms/booking", "RSS MB", "peak MB"], rows)
    if "system_cpu_ms_per_item" in e2e:
        lines.append(
            f"system CPU per booking {e2e['system_cpu_ms_per_item']:.2f} ms: all cores busy at "
            f"{e2e['cpu_bound_per_s']:,.0f} bookings/s"
        )
    if "other_cores_busy" in e2e:
        lines.append(
            f"machine busy {e2e['machine_cores_busy']:.2f} cores, of which other programs "
            f"{e2e['other_cores_busy']:.2f}"
        )
    return lines


def _stages_section(report: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for key, name in (("e2e_low_load", "low load"), ("e2e_open", "open loop"), ("e2e", "closed loop")):
        stages = (report.get(key) or {}).get("stages")
        if not stages or not stages.get("stages_ms"):
            continue
        rows = [
            [stage, *(f"{stages['stages_ms'][stage][k]:.1f}" for k in ("p50", "p95", "p99", "max"))]
            for stage in STAGES
        ]
        lines += ["", f"stages, {name} ({stages['sampled']} bookings sampled, {stages['missing']} missing):"]
        lines += _table(["stage", "p50 ms", "p95 ms", "p99 ms", "max ms"], rows)
    return lines


#: The order the services' own stages are listed in (``choreo.metrics``).
SERVICE_STAGES = (
    "command_request",
    "command_transaction",
    "consumer_lag",
    "prepare",
    "handler",
    "consume_transaction",
    "consume_commit",
    "outbox_lag",
    "projection_transaction",
)


def _stage_order(stage: str) -> int:
    return SERVICE_STAGES.index(stage) if stage in SERVICE_STAGES else len(SERVICE_STAGES)


def _service_stages_section(report: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for key, name in (("e2e_low_load", "low load"), ("e2e", "closed loop")):
        measured = (report.get(key) or {}).get("service_stages")
        if not measured:
            continue
        rows = []
        for service in sorted(measured):
            for stage in sorted(measured[service], key=_stage_order):
                f = measured[service][stage]
                per_item = f"{f['ms_per_item']:.3f}" if f["ms_per_item"] is not None else "-"
                rows.append([service, stage, f"{f['count']:,}", f"{f['mean_ms']:.2f}", per_item])
        lines += ["", f"service stages, {name} (each service's /metrics over the window):"]
        lines += _table(["service", "stage", "count", "mean ms", "ms per booking"], rows)
    return lines


def _scale_section(report: dict[str, Any]) -> list[str]:
    scale = report.get("scale")
    if not scale:
        return []
    lines = ["", "scale (gRPC closed loop with a stored history):"]
    names = sorted({n for level in scale["levels"] for n in level["processes"]})
    header = ["stored", "per s", "p50 ms", "p99 ms", *(f"{n} MB" for n in names)]
    rows = []
    for level in scale["levels"]:
        procs = level["processes"]
        rows.append(
            [
                f"{level['stored']:,}",
                f"{level['throughput_per_s']:,.0f}",
                f"{level['latency_ms']['p50']:.1f}",
                f"{level['latency_ms']['p99']:.1f}",
                *(f"{procs[n]['rss_mb']:.0f}" if n in procs else "-" for n in names),
            ]
        )
    return lines + _table(header, rows)


def _profile_section(report: dict[str, Any], top: int = 6) -> list[str]:
    profiled = report.get("profile")
    if not profiled or not profiled.get("profile"):
        return []
    lines = [
        "",
        f"profile (py-spy, gRPC closed loop at {profiled['throughput_per_s']:,.0f}/s), "
        "shares of busy samples:",
    ]
    for name, result in profiled["profile"].items():
        if "error" in result:
            lines.append(f"  {name}: {result['error']}")
            continue
        lines.append(f"  {name} ({result['samples']} samples, stacks in {result['file']}):")
        lines.append("    on top of the stack:")
        lines += [f"      {share:6.1%}  {frame}  | {source}" for frame, share, source in result["self"][:top]]
        lines.append("    by the project's innermost function:")
        lines += [f"      {share:6.1%}  {frame}" for frame, share in result["app"][:top]]
    return lines
