"""The package's shape stays readable: imports run one way, no cycles, small files, one shape per domain."""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set

import pytest

ROOT = Path(__file__).resolve().parents[1] / "ohio_layers"
MAX_LINES = 500
# which top-level subpackages each may import (the design's bottom-up order); the root's
# config/_validate/_extras modules are shared by all
ALLOWED = {
    "lowlevel": set(),
    "data": set(),
    "inverse": {"lowlevel", "data"},
    "rl": {"lowlevel", "data"},
    "envs": {"lowlevel", "data"},
    "experiments": {"lowlevel", "data", "inverse", "rl", "envs"},
}


def _modules() -> Dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, modules: Dict[str, Path]) -> Set[str]:
    """Every ohio_layers module ``name`` imports, anywhere in the file (lazy imports included)."""
    is_pkg = path.name == "__init__.py"
    package = name if is_pkg else name.rsplit(".", 1)[0]
    found: Set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in modules else mod for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in modules:
                t = t.rsplit(".", 1)[0] if "." in t else ""
            if t and t.startswith("ohio_layers") and t != name:
                found.add(t)
    return found


def _graph() -> Dict[str, Set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def test_no_import_cycle_in_the_package():
    graph = _graph()
    # a package importing its own submodules (re-exports) is not a cycle; everything else is
    edges = {m: {t for t in ts if not t.startswith(m + ".")} for m, ts in graph.items()}
    state: Dict[str, int] = {}
    stack: List[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(edges.get(m, ())):
            if state.get(t) == 1:
                cycle = stack[stack.index(t):] + [t]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m)


def test_subpackages_import_only_downwards():
    bad = []
    for mod, targets in _graph().items():
        parts = mod.split(".")
        if len(parts) < 2 or parts[1] not in ALLOWED:
            continue
        for t in targets:
            tp = t.split(".")
            if len(tp) >= 2 and tp[1] in ALLOWED and tp[1] != parts[1] and tp[1] not in ALLOWED[parts[1]]:
                bad.append(f"{mod} imports {t}")
    assert not bad, "imports against the layering (lowlevel <- data <- inverse/rl/envs <- experiments):\n" + "\n".join(bad)


def test_no_module_over_500_lines_without_saying_why():
    long = []
    for path in ROOT.rglob("*.py"):
        n = len(path.read_text().splitlines())
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        if n > MAX_LINES and "one file because" not in doc:
            long.append(f"{path.relative_to(ROOT)} ({n} lines)")
    assert not long, f"split these or say in the module docstring why they are 'one file because ...': {long}"


def test_every_env_domain_is_a_subpackage_of_one_shape():
    envs = ROOT / "envs"
    flat = [p.name for p in envs.glob("*.py") if p.name != "__init__.py"]
    assert not flat, f"domain modules must live in a subpackage of envs/, found {flat}"
    for domain in (p for p in envs.iterdir() if p.is_dir() and (p / "__init__.py").exists()):
        files = {p.stem for p in domain.glob("*.py")}
        assert {"env", "policies", "data"} <= files, f"envs/{domain.name} lacks one of env.py, policies.py, data.py"
        assert files & {"settings", "scenario"}, f"envs/{domain.name} needs settings.py or scenario.py"
        doc = ast.get_docstring(ast.parse((domain / "__init__.py").read_text()))
        assert doc, f"envs/{domain.name}/__init__.py must state the domain in its docstring"
