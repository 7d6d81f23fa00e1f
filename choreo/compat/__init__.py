"""Compatibility shims: choreo's stand-ins for parts of its dependencies.

A compat module replaces (or patches) one piece of a third-party library that
is too slow or too general for choreo, behind that library's own interface, so
the rest of the code base is written against the library and never against the
shim. Each module's docstring says:

- **Replaces**: the upstream code it stands in for, with a link to the version
  it was written against;
- **Parity**: the test that proves it behaves as that code does (and fails if
  the upstream hook it relies on moves);
- **Remove when**: the condition under which it can be deleted and the upstream
  code used again.

Nothing else belongs here: a module that is choreo's own design is not a shim.

- ``choreo.compat.sqlite_inline``: SQLite on the event loop's thread behind
  SQLAlchemy's ``AsyncEngine`` interface (instead of aiosqlite + greenlets).
- ``choreo.compat.nats_headers``: nats-py's client with a faster header parser.
"""
