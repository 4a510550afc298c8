"""The serving package's import structure: one-way imports, public names only, one error hierarchy."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from shopformer.errors import ConfigError, DataError, RequestError, UserError
from shopformer.serve.batch_scoring import InputError
from shopformer.serve.bundle import BundleError
from shopformer.serve.cli import UsageError
from shopformer.serve.index import IndexConfigError
from shopformer.serve.journey import NoJourneyModel
from shopformer.serve.rules import FilterError

SERVE = Path(__file__).resolve().parents[2] / "src" / "serve"
PACKAGE = "shopformer.serve"


def _imports(path: Path) -> list[ast.ImportFrom | ast.Import]:
    """Every import statement of a module, wherever it is (function bodies and TYPE_CHECKING too)."""
    return [
        node
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Import | ast.ImportFrom)
    ]


def _serve_imports(path: Path) -> set[str]:
    out = set()
    for node in _imports(path):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
        if isinstance(node, ast.ImportFrom) and node.module == PACKAGE:
            names = [f"{PACKAGE}.{a.name}" for a in node.names]
        out |= {n.removeprefix(f"{PACKAGE}.").split(".")[0] for n in names if n.startswith(f"{PACKAGE}.")}
    return out


def test_serving_modules_import_one_way():
    graph = {p.stem: _serve_imports(p) for p in SERVE.glob("*.py")}
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        if module in path:
            pytest.fail(f"import cycle: {' -> '.join((*path[path.index(module) :], module))}")
        if module not in done:
            for target in sorted(graph.get(module, ())):
                visit(target, (*path, module))
            done.add(module)

    for module in sorted(graph):
        visit(module, ())


def test_serving_modules_import_no_private_names():
    private = [
        f"{p.name}:{node.lineno} {alias.name}"
        for p in sorted(SERVE.glob("*.py"))
        for node in _imports(p)
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
        if alias.name.startswith("_") and not alias.name.endswith("__")  # dunders are public
    ]
    assert not private, private


@pytest.mark.parametrize(
    ("error", "base"),
    [
        (BundleError, UserError),
        (IndexConfigError, ConfigError),
        (InputError, DataError),
        (UsageError, ConfigError),
        (FilterError, RequestError),
        (NoJourneyModel, RequestError),
    ],
)
def test_serving_errors_are_user_errors(error, base):
    assert issubclass(error, base) and issubclass(error, UserError)
