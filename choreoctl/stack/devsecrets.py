"""Secrets ``choreo up`` generates once per data directory and reuses on every run.

Each one is a file in ``<data dir>/secrets`` named like the environment variable
it becomes (``BOOKING_NATS_PASSWORD``, ``GATEWAY_JWT_HS256_SECRET``...), readable
by its owner only (the directory 0700, the files 0600). A missing file is
generated (a letter, then ``secrets.token_urlsafe``: letters, digits, ``-`` and
``_``, safe in a URL); an existing one is kept, so the credentials survive restarts and a client
configured once keeps working. Delete a file to rotate its secret.
"""

from __future__ import annotations

import os
import re
import secrets
import string
from pathlib import Path

#: The directory of a data directory holding them.
SECRETS_DIR = "secrets"
#: What a generated (or hand-written) secret may contain: it goes into URLs unescaped, and
#: nats-server reads an environment variable in its config as a value of its own syntax, so
#: one starting with a digit or ``-`` would be taken for a number (and refused).
_SAFE = re.compile(r"[A-Za-z][A-Za-z0-9_\-]{15,}")


class SecretFileError(RuntimeError):
    """A secret file exists but cannot be used."""


class SecretStore:
    """The ``secrets`` directory of a data directory.

    Args:
        directory: Created (0700) on first use.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def get(self, name: str, nbytes: int = 32) -> str:
        """The secret ``name``: read from its file, or generated and written there first."""
        path = self.directory / name
        if path.exists():
            value = path.read_text().strip()
            if not _SAFE.fullmatch(value):
                raise SecretFileError(
                    f"{path}: expected a letter, then at least 15 letters, digits, '-' or '_';"
                    " delete it to generate a new one"
                )
            return value
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        value = secrets.choice(string.ascii_letters) + secrets.token_urlsafe(nbytes)
        # O_EXCL: never overwrite one written meanwhile; 0600 from the start, never readable by others.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(value + "\n")
        return value
