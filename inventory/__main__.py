"""``python -m inventory``: runs the inventory service; ``... capacity ...``: the operator's commands."""

import sys

from choreo.service import run_main
from inventory.build import build
from inventory.settings import InventorySettings

if __name__ == "__main__":
    if len(sys.argv) > 1:
        from inventory.cli import main

        sys.exit(main(sys.argv[1:]))
    run_main(InventorySettings, build)
