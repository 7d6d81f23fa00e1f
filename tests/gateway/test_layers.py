"""The gateway's layers import only downwards (the rule in ``gateway/__init__.py``).

An ast walk over every module of the package: each ``import gateway...`` and
``from gateway... import`` (including the ones under ``TYPE_CHECKING``, and
relative ones) names the layer it reaches, and the layer of the importing
module must be allowed to reach it. It also checks that every imported gateway
module exists in this package, so a stale import of a moved module cannot pass
by resolving somewhere else (an installed copy of the project, say).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import gateway

PACKAGE = Path(gateway.__file__).parent

#: Layer -> the other layers it may import. ``gateway.settings`` (configuration, a
#: leaf) may be imported by every layer; ``gateway.build`` and ``gateway.__main__``
#: (the composition root) by none.
ALLOWED: dict[str, frozenset[str]] = {
    "api": frozenset({"application", "readmodel"}),
    "application": frozenset({"readmodel"}),
    "projection": frozenset({"readmodel"}),
    "readmodel": frozenset(),
}
#: What the API may use of the read model: its value types, never the store itself.
API_READMODEL = frozenset({"gateway.readmodel.model"})
SHARED = frozenset({"gateway.settings"})
COMPOSITION_ROOT = frozenset({"gateway.build", "gateway.__main__"})


def _module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, root: Path) -> Iterator[tuple[int, str, tuple[str, ...]]]:
    """(line, module, names) of every import in ``path`` (``names`` empty for ``import module``)."""
    name = _module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, ()
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            relative = f"{base}.{node.module}" if node.module else base
            module = relative if node.level else node.module or ""
            yield node.lineno, module, tuple(alias.name for alias in node.names)


def _exists(module: str, root: Path) -> bool:
    path = root.parent.joinpath(*module.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _defined(package: str, root: Path) -> set[str]:
    """The names a package's ``__init__`` defines (ours define none: they are docstrings)."""
    init = root.parent.joinpath(*package.split("."), "__init__.py")
    if not init.is_file():
        return set()
    names: set[str] = set()
    for node in ast.parse(init.read_text()).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def resolved(path: Path, root: Path) -> Iterator[tuple[int, str | None, str]]:
    """(line, module, import) for every gateway module ``path`` imports; module ``None``: none such."""
    for line, module, names in _imports(path, root):
        if module != "gateway" and not module.startswith("gateway."):
            continue
        if not _exists(module, root):
            yield line, None, module
            continue
        submodules = [n for n in names if _exists(f"{module}.{n}", root)]
        if not names or len(submodules) < len(names):
            yield line, module, module  # ``import module`` or names of the module itself
        for name in names:
            if name in submodules:
                yield line, f"{module}.{name}", f"{module}.{name}"
            elif (root.parent.joinpath(*module.split("."), "__init__.py")).is_file() and name not in _defined(
                module, root
            ):
                yield line, None, f"{module}.{name}"


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ALLOWED else None


def _check(importer: str, module: str) -> str | None:
    """Why ``importer`` may not import ``module`` (``None``: it may)."""
    own, reached = _layer(importer), _layer(module)
    if own is None:  # the top: settings, build, __main__
        if importer in SHARED and module not in (importer, "gateway"):
            return f"gateway.settings is a leaf, it imports {module}"
        return None
    if module in COMPOSITION_ROOT:
        return f"the {own} layer imports the composition root {module}"
    if reached is None or reached == own:
        return None
    if reached not in ALLOWED[own]:
        return f"the {own} layer imports {module} ({reached})"
    if own == "api" and reached == "readmodel" and module not in API_READMODEL:
        return f"the API reaches the read model only through the application: {module}"
    return None


def violations(root: Path = PACKAGE) -> list[str]:
    """Every import in the package at ``root`` that breaks the layer rule, as ``file:line: reason``."""
    found: set[str] = set()
    for path in sorted(root.rglob("*.py")):
        importer = _module_name(path, root)
        for line, module, written in resolved(path, root):
            where = f"{path.relative_to(root.parent)}:{line}"
            reason = (
                f"{written} is not a module of this package" if module is None else _check(importer, module)
            )
            if reason is not None:
                found.add(f"{where}: {reason}")
    return sorted(found)


def test_every_gateway_import_of_the_project_names_a_module_that_exists() -> None:
    """Tests, scripts and the other packages import the gateway's modules where they are now."""
    project = PACKAGE.parent
    missing = [
        f"{path.relative_to(project)}:{line}: {written}"
        for folder in ("tests", "scripts", "choreo", "booking", "payment")
        for path in sorted((project / folder).rglob("*.py"))
        for line, module, written in resolved(path, PACKAGE)
        if module is None
    ]
    assert missing == []


def test_the_layers_import_only_downwards() -> None:
    assert violations() == []


def test_every_layer_is_a_package_with_modules() -> None:
    for layer in ALLOWED:
        assert (PACKAGE / layer / "__init__.py").is_file()
        assert len(list((PACKAGE / layer).glob("*.py"))) > 1


@pytest.mark.parametrize(
    ("path", "source", "expected"),
    [
        (
            "application/x.py",
            "from gateway.api.auth import X\n",
            "application layer imports gateway.api.auth (api)",
        ),
        (
            "application/x.py",
            "from ..api import auth\n",
            "application layer imports gateway.api.auth (api)",
        ),
        ("application/x.py", "from gateway.projection import feed\n", "imports gateway.projection.feed"),
        (
            "readmodel/x.py",
            "import gateway.projection.feed\n",
            "readmodel layer imports gateway.projection.feed",
        ),
        (
            "readmodel/x.py",
            "from gateway.application.paging import X\n",
            "imports gateway.application.paging (application)",
        ),
        ("projection/x.py", "from gateway.application import core\n", "imports gateway.application.core"),
        ("api/x.py", "from gateway.readmodel.store import ReadModel\n", "only through the application"),
        ("api/x.py", "from gateway.build import build\n", "composition root gateway.build"),
        ("api/x.py", "from gateway.feed import StreamFeed\n", "gateway.feed is not a module of this package"),
        ("api/x.py", "from gateway import paging\n", "gateway.paging is not a module of this package"),
        ("settings.py", "from gateway.api import tls\n", "gateway.settings is a leaf"),
    ],
)
def test_a_wrong_import_is_found(tmp_path: Path, path: str, source: str, expected: str) -> None:
    """The check itself: each kind of wrong import, put in a copy of the package, is reported."""
    copy = tmp_path / "gateway"
    for original in PACKAGE.rglob("*.py"):
        target = copy / original.relative_to(PACKAGE)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(original.read_text())
    (copy / path).write_text(source)
    found = violations(copy)
    assert len(found) == 1 and found[0].startswith(f"gateway/{path}:1: ") and expected in found[0], found


@pytest.mark.parametrize(
    ("path", "source"),
    [
        (
            "api/x.py",
            "from gateway.readmodel.model import BookingView\nfrom gateway.application import core\n",
        ),
        (
            "application/x.py",
            "from gateway.readmodel import store\nfrom gateway.settings import GatewaySettings\n",
        ),
        ("projection/x.py", "from ..readmodel.store import ReadModel\nfrom . import facts\n"),
        ("build.py", "from gateway.api import grpc_api\nfrom gateway.projection import feed\n"),
    ],
)
def test_a_downward_import_passes(tmp_path: Path, path: str, source: str) -> None:
    copy = tmp_path / "gateway"
    for original in PACKAGE.rglob("*.py"):
        target = copy / original.relative_to(PACKAGE)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(original.read_text())
    (copy / path).write_text(source)
    assert violations(copy) == []
