"""``choreo recover SERVICE``: rebuild a service's database by replaying its own stream.

A service rebuilds itself at start when its database is empty and its stream is
not (``choreo.recovery``); this command does the same while the service is
stopped, and says what it did. With ``--into-existing`` it also replays over a
database that still holds rows (a restored backup): restores only add what is
missing. It publishes nothing and charges nothing.

SERVICE names a package with a ``recovery`` module defining ``RECOVERY`` and
``SETTINGS`` (see ``booking/recovery.py``); its settings are read from the
environment like the service reads them.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
from typing import Any

from choreoctl.cli import Subcommand


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("service", help="the service to rebuild (a package with a recovery module)")
    parser.add_argument(
        "--into-existing",
        action="store_true",
        help="replay even when the database still holds rows (only missing ones are added)",
    )
    parser.add_argument(
        "--allow-partial",
        action="store_true",
        help="exit 0 even when the stream no longer holds its first facts (their state is not rebuilt)",
    )


def _run(args: argparse.Namespace) -> int:
    try:
        module = importlib.import_module(f"{args.service}.recovery")
    except ModuleNotFoundError as exc:
        print(f"choreo recover: {args.service!r} has no recovery module ({exc})")
        return 2
    from choreo.service import load_settings

    settings = load_settings(module.SETTINGS)
    return asyncio.run(
        _recover(
            args.service,
            settings,
            module.RECOVERY,
            into_existing=args.into_existing,
            allow_partial=args.allow_partial,
        )
    )


async def _recover(
    service: str, settings: Any, recovery: Any, *, into_existing: bool, allow_partial: bool
) -> int:
    from choreo.bus import connect
    from choreo.db import make_engine
    from choreo.migrate import load_migrations
    from choreo.recovery import is_empty, replay, stream_last_sequence
    from choreo.schema import prepare_schema

    engine = make_engine(settings.database_url, synchronous=settings.sqlite_synchronous)
    try:
        await prepare_schema(
            engine,
            load_migrations(service),
            mode="auto",
            service=service,
            setting=f"{settings.model_config.get('env_prefix', '')}MIGRATE",
        )
        if not into_existing and not await is_empty(engine, recovery):
            print(
                f"choreo recover: {service}'s database still holds rows; nothing done. "
                "Pass --into-existing to add what its stream has and it lacks."
            )
            return 1
        nc = await connect(settings, name=f"{service}-recover", max_reconnect_attempts=3)
        try:
            js = nc.jetstream()
            if not await stream_last_sequence(js, recovery.stream):
                print(f"choreo recover: stream {recovery.stream} holds no facts; nothing to rebuild")
                return 1
            report = await replay(nc, js, engine, recovery, service=service)
        finally:
            await nc.close()
    finally:
        await engine.dispose()
    skipped = ", ".join(f"{n} {t}" for t, n in sorted(report.skipped.items())) or "none"
    print(
        f"rebuilt {service} from {report.facts} facts of {recovery.stream} "
        f"(up to sequence {report.last_sequence}) in {report.seconds:.1f}s; "
        f"applied {report.applied}, skipped {skipped}"
    )
    if report.missing:
        print(
            f"choreo recover: stream {recovery.stream} no longer holds its first {report.missing} facts: "
            "the state they announced is not rebuilt"
        )
        return 0 if allow_partial else 3
    return 0


SUBCOMMAND = Subcommand(
    name="recover",
    help="rebuild a service's database by replaying its stream",
    description=__doc__ or "",
    add_arguments=_add_arguments,
    run=_run,
)
