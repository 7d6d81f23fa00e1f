"""The ``choreo`` command line: one subcommand per module.

Each module named in ``SUBCOMMAND_MODULES`` defines ``SUBCOMMAND``, a
``Subcommand`` with its arguments and its entry point; adding a command is
adding its module to that tuple. Modules are imported only to build the parser,
and a command imports its heavy dependencies (gRPC, databases) when it runs.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from choreo import __version__


@dataclass(frozen=True)
class Subcommand:
    """One ``choreo <name>`` command.

    Attributes:
        name: The word after ``choreo``.
        help: One line for ``choreo --help``.
        description: The text of ``choreo <name> --help``.
        add_arguments: Declares the command's options on its parser.
        run: Runs the command with the parsed arguments; returns the exit code.
    """

    name: str
    help: str
    description: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


#: Modules defining ``SUBCOMMAND``, in the order ``choreo --help`` lists them.
SUBCOMMAND_MODULES: tuple[str, ...] = (
    "choreoctl.stack.local_stack",
    "choreoctl.bench.cli",
    "choreoctl.ops.dlq",
    "choreoctl.ops.outbox",
    "choreoctl.ops.migrate",
    "choreoctl.ops.recover",
)


def load_subcommands(modules: Sequence[str] = SUBCOMMAND_MODULES) -> list[Subcommand]:
    """The ``SUBCOMMAND`` of each module."""
    return [importlib.import_module(name).SUBCOMMAND for name in modules]


def build_parser(subcommands: Sequence[Subcommand]) -> argparse.ArgumentParser:
    """The top-level parser with one subparser per command."""
    parser = argparse.ArgumentParser(
        prog="choreo",
        description="Event choreography on NATS JetStream: run and exercise the booking workflow.",
    )
    parser.add_argument("--version", action="version", version=f"choreo {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for sub in subcommands:
        sub_parser = commands.add_parser(
            sub.name,
            help=sub.help,
            description=sub.description,
            formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        )
        sub.add_arguments(sub_parser)
        sub_parser.set_defaults(run=sub.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``choreo`` console script; returns the exit code."""
    parser = build_parser(load_subcommands())
    args = parser.parse_args(argv)
    run: Callable[[argparse.Namespace], int] = args.run
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
