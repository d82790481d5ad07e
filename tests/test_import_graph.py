"""The import graph of `src/`, built from the code (every import statement, at any depth of a
module, `if TYPE_CHECKING:` blocks included): no cycle, nothing in `api/` importing anything
above it, and `torch.distributed` imported only in `runtime/`."""

from __future__ import annotations

import ast
import fnmatch
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "lighteval_like"


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imported(node: ast.AST, module: str, is_package: bool) -> list[str]:
    """Dotted names an import statement brings in (`from a import b` gives a.b if that is a module, else a)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        anchor = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
        base = ".".join(anchor + ([base] if base else []))
    return [base] + [f"{base}.{alias.name}" for alias in node.names]


def import_graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """module -> the package's modules it imports; module -> every dotted name it imports."""
    modules = _modules()
    graph, raw = {}, {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names.update(_imported(node, name, path.name == "__init__.py"))
        raw[name] = names
        graph[name] = {n for n in names if n in modules and n != name}
    return graph, raw


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph, as a path that ends where it starts; None if it has none."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt, path + [nxt])):
                return found
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start, [start])):
            return found
    return None


def test_the_graph_is_built_from_the_code():
    graph, _ = import_graph()
    assert "lighteval_like.evaluation.pipeline" in graph["lighteval_like.cli.entrypoints"]
    assert "lighteval_like.api.requests" in graph["lighteval_like.evaluation.execution"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle():
    graph, _ = import_graph()
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_api_imports_nothing_above_it():
    graph, _ = import_graph()
    upward = {m: sorted(d for d in deps if not d.startswith(f"{PACKAGE}.api"))
              for m, deps in graph.items() if m.startswith(f"{PACKAGE}.api")}
    assert {m: d for m, d in upward.items() if d} == {}


@pytest.mark.parametrize("name", ["torch.distributed"])
def test_torch_distributed_only_in_runtime(name):
    _, raw = import_graph()
    outside = sorted(m for m, names in raw.items()
                     if any(n == name or n.startswith(name + ".") for n in names)
                     and not m.startswith(f"{PACKAGE}.runtime"))
    assert outside == []
    assert any(m.startswith(f"{PACKAGE}.runtime") for m, names in raw.items() if name in names)


# Stages from the ground floor up: a package imports only packages below it (or its own modules).
LAYERS = ["api", "runtime", "models", "metrics", "tasks", "results", "evaluation", "cli"]
TOOLS = {"demo": "cli", "__main__": "cli"}  # modules at the top of the package, at the level of the CLI


def _layer(module: str) -> int | None:
    parts = module.split(".")
    if len(parts) == 1:
        return None  # the package's own __init__ (its version): importable from anywhere
    return LAYERS.index(TOOLS.get(parts[1], parts[1]))


def test_no_import_runs_back_up_the_stages():
    graph, _ = import_graph()
    upward = sorted(f"{m} -> {d}" for m, deps in graph.items() for d in deps
                    if _layer(d) is not None and _layer(m) is not None and _layer(d) > _layer(m))
    assert upward == []


def _layout_rows() -> dict[str, str]:
    """The README's layout table: package (`models/vllm/`) -> what its row says it owns."""
    text = (SRC.parent / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
        if len(cells) >= 2 and cells[0].startswith("`") and cells[0].endswith("/`"):
            rows[cells[0].strip("`")] = cells[1]
    return rows


def test_readme_layout_table_matches_the_packages():
    """Every package has a row (or is named in its parent's), every module of a package is named in
    its row, and every module a row names exists."""
    rows, root = _layout_rows(), SRC / PACKAGE
    for package in sorted(p.parent for p in root.rglob("__init__.py") if p.parent != root):
        rel = package.relative_to(root).as_posix() + "/"
        if rel not in rows:
            parent = package.parent.relative_to(root).as_posix() + "/"
            assert f"`{package.name}/`" in rows.get(parent, ""), f"README layout: no row for {rel}"
            continue
        named = re.findall(r"`([\w*]+\.py)`", rows[rel])
        modules = sorted(m.name for m in package.glob("*.py") if m.name != "__init__.py")
        assert [m for m in modules if not any(fnmatch.fnmatch(m, n) for n in named)] == [], rel
        assert [n for n in named if not any(fnmatch.fnmatch(m, n) for m in modules)] == [], rel
