"""``choreo migrate``: the ``choreo`` command's name for ``python -m choreo.migrate``.

The migrations themselves stay in the runtime (``choreo.migrate``): a service's
image runs them as a Kubernetes Job, where the developer tooling has no place.
This module only registers that command with ``choreo``; it imports nothing
heavy, so building the parser stays cheap.
"""

from __future__ import annotations

from choreo import migrate
from choreoctl.cli import Subcommand

SUBCOMMAND = Subcommand(
    name="migrate",
    help="upgrade a service's database to this release, check it, or write a new revision",
    description=migrate.__doc__ or "",
    add_arguments=migrate.add_arguments,
    run=migrate.run,
)
