"""The design's boundaries, checked on the source: ``sim`` is a pure library without import cycles, nothing imports
a private name of another module, and code above the world interface never branches on the world kind."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SIM = Path(__file__).resolve().parents[1] / "sim"
MODULES = sorted(SIM.rglob("*.py"))


def _name(path: Path) -> str:
    rel = path.relative_to(SIM.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """``(module, imported names)`` of every import statement (module level or inside functions)."""
    mod = _name(path)
    is_pkg = path.name == "__init__.py"
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = mod.split(".") if is_pkg else mod.split(".")[:-1]
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join(parts + ([base] if base else []))
            out.append((base, [a.name for a in node.names]))
    return out


def import_graph() -> dict[str, set[str]]:
    names = {_name(p) for p in MODULES}
    graph: dict[str, set[str]] = {}
    for path in MODULES:
        mod = _name(path)
        edges = set()
        for base, items in _imports(path):
            for target in [base, *(f"{base}.{i}" for i in items)]:
                while target and target not in names:
                    target = target.rpartition(".")[0]
                if target and target != mod and not mod.startswith(target + "."):
                    edges.add(target)
        graph[mod] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_sim_has_no_import_cycle():
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_sim_is_a_pure_library():
    """No hydra, no files, no plotting or progress bars, no experiments code inside ``sim``."""
    banned = ("hydra", "omegaconf", "matplotlib", "tqdm", "pandas", "experiments")
    found = [f"{_name(p)} imports {base}" for p in MODULES for base, _ in _imports(p) if base.split(".")[0] in banned]
    assert found == []
    for p in MODULES:
        tree = ast.parse(p.read_text())
        calls = [n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]
        assert "print" not in calls and "open" not in calls, p


@pytest.mark.parametrize("root", ["sim", "experiments", "benchmarks", "tests", "hydra_plugins"])
def test_no_private_name_is_imported_across_modules(root):
    here = Path(__file__).resolve().parents[1] / root
    bad = [
        f"{path.relative_to(here.parent)}: from {base} import {name}"
        for path in here.rglob("*.py")
        for base, names in _imports(path)
        for name in names
        if name.startswith("_") and not name.startswith("__") and base.split(".")[0] in ("sim", "experiments")
    ]
    assert bad == []


def test_docstrings_stand_on_their_own():
    assert [p.name for p in MODULES if "DESIGN section" in p.read_text() or "DESIGN.md" in p.read_text()] == []


#: Names that reveal which world kind (or capability) code holds.
KIND_NAMES = {"compressed", "enumerable", "EnumeratedWorld", "MarkovWorld"}


def _kind_branches(tree: ast.AST) -> list[int]:
    """Lines of ``if``/conditional expressions whose condition reads a world kind."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.If | ast.IfExp | ast.While):
            for sub in ast.walk(node.test):
                named = (isinstance(sub, ast.Name) and sub.id in KIND_NAMES) or (
                    isinstance(sub, ast.Attribute) and (sub.attr in KIND_NAMES or _world_kind(sub))
                )
                if named:
                    lines.append(node.lineno)
                    break
    return lines


def _world_kind(node: ast.Attribute) -> bool:
    """``world.kind`` (not ``data.kind`` or ``cfg.oracle.kind``, which name a feedback or oracle family)."""
    return node.attr == "kind" and isinstance(node.value, ast.Name) and node.value.id in ("world", "self")


def test_code_above_the_world_interface_never_branches_on_the_world_kind():
    above = [p for p in MODULES if "worlds" not in p.parts]
    found = {str(p.relative_to(SIM.parent)): _kind_branches(ast.parse(p.read_text())) for p in above}
    assert {k: v for k, v in found.items() if v} == {}


def test_the_kind_detector_detects_a_branch():
    src = "def f(world):\n    if world.enumerable:\n        return 1\n    return 2 if cfg.env.compressed else 3\n"
    assert _kind_branches(ast.parse(src)) == [2, 4]
    assert _kind_branches(ast.parse("if world.kind == 'markov':\n    pass\n")) == [1]
    assert _kind_branches(ast.parse("if data.kind == 'preferences':\n    pass\n")) == []
