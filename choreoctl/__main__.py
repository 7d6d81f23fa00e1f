"""``python -m choreoctl``: the ``choreo`` command, without its console script."""

import sys

from choreoctl.cli import main

if __name__ == "__main__":
    sys.exit(main())
