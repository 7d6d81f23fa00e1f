"""choreoctl: the developer and operator tooling behind the ``choreo`` command.

What runs on a developer's machine or an operator's terminal, never inside a
service: ``choreo up`` and the local stack it supervises (``choreoctl.stack``),
the operator commands (``choreoctl.ops``: dlq, outbox, recover, migrate), the
``--demo`` walk-through and the benchmark lab (``choreoctl.bench``). It imports
the runtime (``choreo``); the runtime and the services never import it
(``tests/test_import_rules.py``).
"""
