"""``python -m inventory capacity set RESOURCE_ID CAPACITY`` and ``capacity show [RESOURCE_ID]``.

The operator's commands, on the database named by ``INVENTORY_DATABASE_URL`` (the
service's own settings): ``set`` commits the capacity and its ``InventoryCapacitySet``
fact together (``inventory.capacity``), which the running service's outbox relay
publishes; ``show`` prints capacities and reserved units. A wrong argument is refused
before anything is touched, with a message naming it (exit status 2); a database that
cannot be used gives exit status 1. A capacity below the units already reserved is
set, with a warning: nothing more is reserved until enough units are released.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from collections.abc import Sequence

from sqlalchemy.exc import SQLAlchemyError

from choreo.db import make_engine
from choreo.schema import SchemaRefused, prepare_schema
from choreo.service import load_settings
from inventory.capacity import ResourceState, resource_states, set_capacity
from inventory.migrations import MIGRATIONS
from inventory.rules import MAX_CAPACITY, RESOURCE_ID_RULE, is_capacity, is_resource_id
from inventory.settings import InventorySettings

PROG = "python -m inventory"
#: A capacity as typed: decimal digits only (no sign, no spaces, at most ten of them).
_DIGITS = re.compile(r"[0-9]{1,10}")


def resource_id_argument(value: str) -> str:
    if not is_resource_id(value):
        raise argparse.ArgumentTypeError(f"must be {RESOURCE_ID_RULE}, not {value[:80]!r}")
    return value


def capacity_argument(value: str) -> int:
    if not _DIGITS.fullmatch(value) or not is_capacity(int(value)):
        raise argparse.ArgumentTypeError(
            f"must be a whole number from 0 to {MAX_CAPACITY}, not {value[:80]!r}"
        )
    return int(value)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog=PROG,
        description="Without arguments: run the inventory service. With `capacity`: the operator's commands.",
    )
    commands = top.add_subparsers(dest="command", required=True, metavar="capacity")
    capacity = commands.add_parser("capacity", help="show or set the capacity of resources")
    actions = capacity.add_subparsers(dest="action", required=True, metavar="{set,show}")
    setting = actions.add_parser(
        "set",
        help="set a resource's capacity (units that may be reserved at once)",
        description="Sets a resource's capacity; the units already reserved stay reserved.",
    )
    setting.add_argument("resource_id", metavar="RESOURCE_ID", type=resource_id_argument)
    setting.add_argument("capacity", metavar="CAPACITY", type=capacity_argument)
    showing = actions.add_parser("show", help="show the capacity and reserved units of resources")
    showing.add_argument(
        "resource_id", metavar="RESOURCE_ID", nargs="?", default=None, type=resource_id_argument
    )
    return top


def table(states: Sequence[ResourceState]) -> str:
    """The resources as aligned columns."""
    header = ("RESOURCE_ID", "CAPACITY", "RESERVED", "AVAILABLE")
    rows = [(s.resource_id, str(s.capacity), str(s.reserved), str(s.available)) for s in states]
    width = max(len(r[0]) for r in [header, *rows])
    return "\n".join(f"{r[0]:<{width}}  {r[1]:>10}  {r[2]:>10}  {r[3]:>10}" for r in [header, *rows])


async def run(args: argparse.Namespace, settings: InventorySettings) -> int:
    engine = make_engine(settings.database_url, synchronous=settings.sqlite_synchronous)
    try:
        await prepare_schema(
            engine, MIGRATIONS, mode=settings.migrate, service="inventory", setting="INVENTORY_MIGRATE"
        )
        if args.action == "set":
            async with engine.begin() as conn:
                state, _ = await set_capacity(
                    conn, args.resource_id, args.capacity, source=settings.service_name
                )
            print(
                f"{state.resource_id}: capacity {state.capacity} (reserved {state.reserved}, "
                f"available {state.available}); InventoryCapacitySet is published by the running service"
            )
            if state.over_reserved:
                print(
                    f"warning: {state.resource_id} has {state.reserved} units reserved, more than its new "
                    f"capacity {state.capacity}: nothing more is reserved until "
                    f"{state.reserved - state.capacity + 1} or more are released",
                    file=sys.stderr,
                )
            return 0
        async with engine.connect() as conn:
            states = await resource_states(conn, args.resource_id, default_capacity=settings.default_capacity)
            await conn.rollback()
        if not states:
            print(
                f"no resource seen yet; each gets INVENTORY_DEFAULT_CAPACITY ({settings.default_capacity}) "
                "units with its first booking"
            )
            return 0
        print(table(states))
        for s in states:
            if not s.known:
                print(
                    f"{s.resource_id} was not booked yet: its first booking gives it "
                    f"INVENTORY_DEFAULT_CAPACITY ({settings.default_capacity}) units"
                )
        return 0
    except SchemaRefused as exc:
        print(f"{PROG} capacity: {exc}", file=sys.stderr)
        return 1
    except (OSError, SQLAlchemyError) as exc:
        print(f"{PROG} capacity: the inventory database is unavailable: {exc}", file=sys.stderr)
        return 1
    finally:
        await engine.dispose()


def main(argv: Sequence[str]) -> int:
    """Parses ``argv`` (exits 2 on a wrong argument, naming it), reads the settings, runs the command."""
    args = parser().parse_args(list(argv))
    settings = load_settings(InventorySettings)
    return asyncio.run(run(args, settings))
