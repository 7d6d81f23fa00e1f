"""Who may import whom: the runtime sits below the services and the tooling, and imports neither.

``choreo/`` is the runtime every service process loads; ``choreoctl/`` is the
``choreo`` command's tooling (``choreo up``, the operator commands, the
benchmark lab), which imports the runtime, never the reverse. Two checks keep
the split real:

- a service process never loads the tooling: each service's entry modules are
  imported in a fresh interpreter, whose ``sys.modules`` must hold no module
  under a forbidden prefix (an import made inside a function that the entry
  modules do not run is beyond this check, hence the second one);
- nothing under ``choreo/`` imports the tooling or a service, read from the
  source (every ``import``, ``from ... import``, including the relative and the
  ``TYPE_CHECKING`` ones, and ``importlib.import_module`` of a constant name).

A new rule is one more prefix in ``FORBIDDEN_IN_SERVICE_PROCESS`` or
``FORBIDDEN_IN_RUNTIME``.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUNTIME = ROOT / "choreo"

SERVICES = ("booking", "payment", "gateway", "notification", "analytics", "inventory")

#: What ``python -m <service>`` loads: the wiring, and the entry module itself.
SERVICE_ENTRIES = tuple(f"{service}.{module}" for service in SERVICES for module in ("build", "__main__"))

#: Packages no service process may have loaded.
FORBIDDEN_IN_SERVICE_PROCESS: tuple[str, ...] = ("choreoctl",)

#: The services' contracts (generated code): the runtime reads where facts travel from their
#: options (``choreo.contract``), never from a service's own messages.
CONTRACTS = tuple(f"choreo.{service}.v1" for service in SERVICES)

#: Packages no module of the runtime may import.
FORBIDDEN_IN_RUNTIME: tuple[str, ...] = ("choreoctl", *SERVICES, *CONTRACTS)

#: Generated protobuf code (``scripts/gen_protos.py``), not written by hand: the services'
#: contracts and the runtime's own (``choreo.options.v1``).
GENERATED = tuple(path.parent for path in RUNTIME.glob("*/v1/__init__.py"))

#: What only a service may spell: its stream names, and its fact and command subjects.
SERVICE_NAMES = ("BOOKING", "PAYMENT", "NOTIFICATION", "INVENTORY")
SERVICE_SUBJECT_PREFIXES = (
    "booking.",
    "payment.",
    "notification.",
    "inventory.",
    "cmd.booking.",
    "cmd.payment.",
    "query.analytics.",
)


def is_under(name: str, prefixes: Sequence[str]) -> bool:
    """Whether module ``name`` is one of ``prefixes`` or inside one of them."""
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def loaded_modules(entry: str) -> list[str]:
    """Every module in ``sys.modules`` of a fresh interpreter after ``import entry``."""
    probe = (
        "import importlib, json, sys\n"
        f"importlib.import_module({entry!r})\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, f"import {entry} failed:\n{result.stderr[-3000:]}"
    modules: list[str] = json.loads(result.stdout.splitlines()[-1])
    return modules


def module_name(path: Path) -> str:
    """``choreo/outbox.py`` -> ``choreo.outbox``; ``choreo/compat/__init__.py`` -> ``choreo.compat``."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(source: str, module: str, *, is_package: bool = False) -> Iterator[str]:
    """The absolute name of every module ``source`` (the text of ``module``) imports."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                parent = ".".join([*base, node.module] if node.module else base)
            else:
                parent = node.module or ""
            yield parent
            # ``from choreo import x`` may import the module ``choreo.x``.
            yield from (f"{parent}.{alias.name}" for alias in node.names if alias.name != "*")
        elif (
            isinstance(node, ast.Call)
            and (
                (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                or (isinstance(node.func, ast.Name) and node.func.id == "import_module")
            )
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield node.args[0].value


def runtime_sources() -> list[Path]:
    """Every hand-written module of the runtime."""
    return sorted(
        path
        for path in RUNTIME.rglob("*.py")
        if not any(path.is_relative_to(generated) for generated in GENERATED)
    )


@pytest.mark.parametrize("entry", SERVICE_ENTRIES)
def test_a_service_process_never_loads_the_tooling(entry: str) -> None:
    modules = loaded_modules(entry)
    assert entry in modules
    assert [m for m in modules if is_under(m, FORBIDDEN_IN_SERVICE_PROCESS)] == []


def test_the_process_probe_sees_the_tooling_when_it_is_loaded() -> None:
    """The check above would fail if a service imported the tooling: the probe does see it."""
    modules = loaded_modules("choreoctl.cli")
    assert is_under("choreoctl.cli", FORBIDDEN_IN_SERVICE_PROCESS)
    assert "choreoctl.cli" in [m for m in modules if is_under(m, FORBIDDEN_IN_SERVICE_PROCESS)]


def test_the_runtime_imports_neither_the_tooling_nor_a_service() -> None:
    sources = runtime_sources()
    assert RUNTIME / "service.py" in sources and RUNTIME / "migrate.py" in sources
    assert not [p for p in sources if "v1" in p.relative_to(RUNTIME).parts]
    violations = [
        f"{path.relative_to(ROOT)}: imports {name}"
        for path in sources
        for name in imported_names(path.read_text(), module_name(path), is_package=path.name == "__init__.py")
        if is_under(name, FORBIDDEN_IN_RUNTIME)
    ]
    assert violations == []


def spelled_names(source: str) -> Iterator[str]:
    """The string constants of a module that name a service's stream or subject (docstrings aside)."""
    tree = ast.parse(source)
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Constant) and isinstance(node.value, str)) or id(node) in docstrings:
            continue
        if node.value in SERVICE_NAMES or node.value.startswith(SERVICE_SUBJECT_PREFIXES):
            yield node.value


def test_the_runtime_spells_no_services_stream_or_subject() -> None:
    spelled = [
        f"{path.relative_to(ROOT)}: {name!r}"
        for path in runtime_sources()
        for name in spelled_names(path.read_text())
    ]
    assert spelled == []


def test_the_spelling_check_sees_a_stream_and_a_subject() -> None:
    source = '"""BOOKING in a docstring is fine."""\nSTREAM = "BOOKING"\nSUBJECT = "payment.failed"\n'
    assert list(spelled_names(source)) == ["BOOKING", "payment.failed"]


def test_the_source_check_sees_every_form_of_import() -> None:
    source = (
        "import choreoctl.stack.ports\n"
        "from gateway import build\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from payment.settings import PaymentSettings\n"
        "def later():\n"
        "    import importlib\n"
        "    importlib.import_module('booking.build')\n"
        "from . import outbox\n"
        "from ..compat import nats_headers\n"
    )
    names = set(imported_names(source, "choreo.compat.sqlite_inline"))
    assert {"choreoctl.stack.ports", "gateway", "gateway.build", "payment.settings"} <= names
    assert {"booking.build", "choreo.compat.outbox", "choreo.compat.nats_headers"} <= names
    found = {n.split(".")[0] for n in names if is_under(n, FORBIDDEN_IN_RUNTIME)}
    assert found == {"choreoctl", "gateway", "payment", "booking"}


def runtime_imports(source: str) -> set[tuple[str, str]]:
    """``(module, name)`` of every runtime name ``source`` imports (generated contracts aside).

    ``from choreo.x import n`` gives ``("choreo.x", "n")``, ``from choreo import n``
    ``("choreo", "n")``, and ``import choreo.x`` ``("choreo.x", "")``: a whole module of
    the runtime, which no public face covers.
    """
    found: set[tuple[str, str]] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            if is_under(node.module, ("choreo",)) and ".v1" not in node.module:
                found.update((node.module, alias.name) for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(
                (alias.name, "")
                for alias in node.names
                if is_under(alias.name, ("choreo",)) and alias.name != "choreo" and ".v1" not in alias.name
            )
    return found


def service_imports() -> set[tuple[str, str]]:
    """``(module, name)`` of every runtime name a service imports (generated contracts aside)."""
    found = set()
    for service in SERVICES:
        for path in (ROOT / service).rglob("*.py"):
            found |= runtime_imports(path.read_text())
    return found


def test_the_service_import_check_sees_every_form() -> None:
    source = (
        "from choreo.outbox_store import claim\n"
        "from choreo import outbox\n"
        "import choreo.outbox\n"
        "import choreo\n"
        "from choreo.booking.v1 import events_pb2\n"
        "import choreo.payment.v1.events_pb2\n"
    )
    assert runtime_imports(source) == {
        ("choreo.outbox_store", "claim"),
        ("choreo", "outbox"),
        ("choreo.outbox", ""),
    }


def test_services_use_only_the_runtimes_public_face() -> None:
    """Every runtime name a service imports is one of ``choreo.__all__`` (the same object)."""
    import importlib

    import choreo

    public = {id(getattr(choreo, name)) for name in choreo.__all__}
    imported = service_imports()
    assert ("choreo.runtime", "open_runtime") in imported
    private = sorted(
        f"{module}.{name}" if name else f"import {module}"
        for module, name in imported
        if not name
        or (module == "choreo" and name not in choreo.__all__)
        or id(getattr(importlib.import_module(module), name)) not in public
    )
    assert private == [], "add them to choreo.__all__ (choreo/__init__.py), or do not use them"


def test_the_public_face_resolves_every_name_it_lists() -> None:
    import choreo

    assert set(choreo.__all__) == set(choreo._EXPORTS)
    for name in choreo.__all__:
        assert getattr(choreo, name) is not None


def test_what_type_checkers_see_is_what_the_public_face_resolves() -> None:
    """The ``TYPE_CHECKING`` imports of ``choreo/__init__.py`` name the same objects as ``_EXPORTS``:
    a name added to one only would type-check against another object than the one a service gets."""
    import choreo

    seen: dict[str, tuple[str, str]] = {}
    for node in ast.parse((RUNTIME / "__init__.py").read_text()).body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for statement in node.body:
                assert isinstance(statement, ast.ImportFrom) and statement.module, ast.dump(statement)
                for alias in statement.names:
                    seen[alias.asname or alias.name] = (statement.module, alias.name)
    assert seen == choreo._EXPORTS
