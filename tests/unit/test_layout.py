"""The floor plan: alphapulse -> agents -> stream -> models; no import runs up a floor, no
circle between modules, and the project's own imports stand at the top of each module.

The imports are read from the source with :mod:`ast`; nothing of the project is imported here.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
FLOORS = {"alphapulse": 4, "agents": 3, "stream": 2, "models": 1}


@dataclass(frozen=True)
class Import:
    """One import of a project module found in ``source``."""

    source: str
    target: str
    line: int
    top: bool
    commented: bool


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> list[str]:
    """The project modules an ``import`` or ``from ... import`` names (submodules included)."""
    if node.level:
        base = module.split(".")
        base = base[: len(base) - node.level + (1 if is_package else 0)]
        prefix = ".".join([*base, node.module] if node.module else base)
    else:
        prefix = node.module or ""
    return [prefix, *(f"{prefix}.{alias.name}" for alias in node.names)]


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(path: Path, known: set[str]) -> list[Import]:
    module = _module_name(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    tree = ast.parse("\n".join(lines))
    top_level: set[int] = set()
    for stmt in tree.body:
        top_level.add(id(stmt))
        if isinstance(stmt, ast.If) and _is_type_checking(stmt):
            top_level.update(id(s) for s in stmt.body)
        if isinstance(stmt, ast.Try):
            top_level.update(id(s) for s in stmt.body)
    # An import inside a function may stand in a block of imports under one comment.
    block_start: dict[int, int] = {}
    for parent in ast.walk(tree):
        body = getattr(parent, "body", None)
        if not isinstance(body, list):
            continue
        first = 0
        for i, stmt in enumerate(body):
            if not isinstance(stmt, ast.Import | ast.ImportFrom):
                first = i + 1
                continue
            block_start[id(stmt)] = body[first].lineno if first < len(body) else stmt.lineno
    found: list[Import] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = _resolve(module, path.name == "__init__.py", node)
        else:
            continue
        start = block_start.get(id(node), node.lineno)
        above = lines[start - 2].strip() if start > 1 else ""
        commented = above.startswith("#") or "#" in lines[node.lineno - 1]
        for name in names:
            if name in known:
                found.append(Import(module, name, node.lineno, id(node) in top_level, commented))
    return found


def _project() -> tuple[dict[str, Path], list[Import]]:
    paths = {
        _module_name(p): p
        for package in FLOORS
        for p in sorted((ROOT / package).rglob("*.py"))
        if "__pycache__" not in p.parts
    }
    known = set(paths)
    imports = [imp for p in paths.values() for imp in _imports(p, known)]
    return paths, imports


def _floor(module: str) -> int:
    return FLOORS[module.split(".")[0]]


def test_every_package_has_modules() -> None:
    paths, imports = _project()
    assert {m.split(".")[0] for m in paths} == set(FLOORS)
    assert imports, "no project imports found: the parser is broken"


def test_no_import_runs_up_a_floor() -> None:
    _, imports = _project()
    upward = [
        f"{i.source}:{i.line} imports {i.target}"
        for i in imports
        if _floor(i.target) > _floor(i.source)
    ]
    assert not upward, "imports that run up a floor:\n" + "\n".join(upward)


def test_no_circle_between_modules() -> None:
    _, imports = _project()
    graph: dict[str, set[str]] = {}
    for i in imports:
        if i.target != i.source and not i.source.startswith(i.target + "."):
            graph.setdefault(i.source, set()).add(i.target)
    circles: list[list[str]] = []
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                circles.append([*trail[trail.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not circles, "circles:\n" + "\n".join(" -> ".join(c) for c in circles)


def test_project_imports_stand_at_the_top_or_say_why() -> None:
    _, imports = _project()
    hidden = [f"{i.source}:{i.line} {i.target}" for i in imports if not i.top and not i.commented]
    assert not hidden, "project imports inside functions without a comment:\n" + "\n".join(hidden)


@pytest.mark.parametrize(
    ("source", "target", "upward"),
    [("alphapulse.app", "agents.learner", False), ("models.keyed", "stream.codec", True)],
)
def test_floor_order(source: str, target: str, upward: bool) -> None:
    assert (_floor(target) > _floor(source)) is upward
