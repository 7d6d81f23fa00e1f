"""The durability settings the figures were measured with, and the machine they ran on."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from choreo.db import durability_settings, make_engine
from choreoctl.stack.natsserver import find_binary

#: What nats-server does without ``sync_interval``: write through to the OS at once,
#: fsync every two minutes (a machine crash can lose up to that much; a process crash nothing).
DEFAULT_SYNC = "default (2m: written to the OS at once, fsync every 2 minutes)"
ALWAYS_SYNC = "always (fsync before every acknowledgement)"


async def database_settings(
    urls: Mapping[str, str], environ: Mapping[str, str] = os.environ
) -> dict[str, dict[str, str]]:
    """What each service's database does on commit.

    The engine is made with ``choreo.db.make_engine``, the services' own
    factory, with the ``synchronous`` each service gets from ``environ``
    (``<SERVICE>_SQLITE_SYNCHRONOUS``, default FULL), so the per-connection
    pragmas reported are the ones the services' connections get.
    """
    settings: dict[str, dict[str, str]] = {}
    for name, url in urls.items():
        synchronous = environ.get(f"{name.upper()}_SQLITE_SYNCHRONOUS", "FULL").upper()
        engine = make_engine(url, writer=False, synchronous=synchronous)
        try:
            async with engine.connect() as conn:
                settings[name] = await durability_settings(conn)
        except Exception as exc:  # a database the benchmark cannot open is reported, not fatal
            settings[name] = {"error": f"{type(exc).__name__}: {exc}"[:200]}
        finally:
            await engine.dispose()
    return settings


def jetstream_settings(sync_interval: str | None) -> dict[str, str]:
    return {"sync_interval": ALWAYS_SYNC if sync_interval == "always" else (sync_interval or DEFAULT_SYNC)}


def machine() -> dict[str, Any]:
    """CPU, memory and software versions of this machine, and its load when asked."""
    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gb": _memory_gb(),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "nats_server": _nats_version(),
    }
    with contextlib.suppress(OSError):
        info["load_average"] = [round(v, 2) for v in os.getloadavg()]
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def _nats_version() -> str:
    try:
        out = subprocess.run([find_binary(), "--version"], capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or out.stderr.strip()
    except Exception as exc:
        return f"unknown ({type(exc).__name__})"
