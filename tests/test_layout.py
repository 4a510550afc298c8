"""The package's import structure, read from the source: no cycles, public names only, layers one way.

Every import statement counts, wherever it stands (function bodies and ``TYPE_CHECKING`` blocks too),
so a lazy import cannot hide a cycle. Imports flow ``train -> models -> data`` and ``train -> serve``;
``serve`` reads bundles with numpy, onnxruntime and faiss and never imports torch or lightning; nor does
``offpolicy`` (estimators and simulator), which may use ``serve``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "shopformer"
# What each layer may import from the others ("": the package itself, its version; errors: the one
# hierarchy of user errors every layer shares; provenance: processor and commit, for stamping output).
SHARED = {"errors", "provenance"}
ALLOWED = {
    "data": {"data"} | SHARED,
    "models": {"models", "data"} | SHARED,
    "serve": {"serve", "data"} | SHARED,
    "offpolicy": {"offpolicy", "serve", "data"} | SHARED,
    "abtest": {"abtest", "offpolicy", "serve", "data"} | SHARED,
    "train": {"train", "models", "data", "serve"} | SHARED,
}
NO_TORCH = ("torch", "lightning", "pytorch_lightning", "torchmetrics")


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join((PACKAGE, *parts))


MODULES = {module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def imported_modules(path: Path) -> list[tuple[int, str, list[str]]]:
    """``(line, module, names)`` of every import of the module at ``path``."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module, [alias.name for alias in node.names]))
    return out


def internal_targets(module: str, names: list[str]) -> set[str]:
    """The shopformer modules an import statement loads (``from pkg import submodule`` included)."""
    if not module.startswith(PACKAGE):
        return set()
    submodules = {f"{module}.{name}" for name in names if f"{module}.{name}" in MODULES}
    plain = set(names) - {s.rsplit(".", 1)[1] for s in submodules}
    return submodules | ({module} if plain or not names else set())


def graph() -> dict[str, set[str]]:
    return {
        name: {t for _, mod, names in imported_modules(path) for t in internal_targets(mod, names)} - {name}
        for name, path in MODULES.items()
    }


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def layer(module: str) -> str:
    return module.split(".")[1] if module.count(".") else ""


def test_the_checker_finds_a_cycle_and_the_module_names():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert "shopformer.data.journey" in MODULES and "shopformer.train.train" in MODULES
    assert internal_targets("shopformer.data", ["schema"]) == {"shopformer.data.schema"}


def test_no_import_cycle_among_src_modules():
    assert not cycles(graph()), cycles(graph())


def test_no_module_imports_a_private_name_from_another():
    private = [
        f"{path.relative_to(SRC)}:{line} {module}.{name}"
        for path in MODULES.values()
        for line, module, names in imported_modules(path)
        for name in (names or module.split("."))
        if name.startswith("_") and not name.endswith("__")
    ]
    assert not private, private


@pytest.mark.parametrize("room", sorted(ALLOWED))
def test_layers_import_one_way(room):
    wrong = sorted(
        f"{module} -> {target}"
        for module, targets in graph().items()
        if layer(module) == room
        for target in targets
        if layer(target) not in ALLOWED[room] | {""}
    )
    assert not wrong, wrong


@pytest.mark.parametrize("room", ["serve", "offpolicy", "abtest"])
def test_torch_free_rooms_never_import_torch_or_lightning(room):
    hits = [
        f"{path.relative_to(SRC)}:{line} {module}"
        for name, path in MODULES.items()
        if layer(name) == room
        for line, module, _ in imported_modules(path)
        if module.split(".")[0] in NO_TORCH
    ]
    assert not hits, hits


def test_data_modules_used_by_serving_import_no_torch():
    """What serving imports from ``data`` (vocabularies, features, labels) must stay torch-free too."""
    edges = graph()
    rooms = ("serve", "offpolicy", "abtest")
    reached, todo = set(), [t for m, ts in edges.items() if layer(m) in rooms for t in ts]
    while todo:
        module = todo.pop()
        if module not in reached:
            reached.add(module)
            todo += edges.get(module, ())
    torchy = sorted(
        module
        for module in reached
        for _, imported, _ in imported_modules(MODULES[module])
        if imported.split(".")[0] in NO_TORCH
    )
    assert not torchy, torchy


def test_every_module_is_under_400_lines():
    lines = {str(p.relative_to(SRC)): len(p.read_text().splitlines()) for p in MODULES.values()}
    long = {name: n for name, n in lines.items() if n >= 400}
    assert not long, long
