"""The engine package never imports WebUI, gradio, ldm, sgm or scripts, nor Forge's backend or modules_forge, at
import time, host adapters (motion_module/hosts) included (checked in a clean interpreter)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHECK = (
    "import motion_module, pkgutil, importlib, sys; "
    "names = [m.name.removeprefix('motion_module.') for m in pkgutil.walk_packages(motion_module.__path__, "
    "'motion_module.')]; "
    "[importlib.import_module('motion_module.' + n) for n in names]; "
    "bad = [n for n in sys.modules if n.split('.')[0] in ('modules', 'gradio', 'scripts', 'ldm', 'sgm', 'backend', "
    "'modules_forge', 'huggingface_guess')]; "
    "assert not bad, bad; "
    "assert {'convert', 'loading', 'tools', 'spec', 'model', 'hosts.a1111', 'hosts.forge'} <= set(names), names; "
    "print(len(names))"
)


def test_engine_imports_no_webui_modules():
    result = subprocess.run([sys.executable, "-c", CHECK], cwd=REPO, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.strip()) >= 5


def _engine_import_graph() -> dict[str, set[str]]:
    """module -> engine modules it imports (relative or absolute, at any depth of the file)."""
    import ast

    package = REPO / "motion_module"
    names = {path.stem for path in package.glob("*.py")}
    graph: dict[str, set[str]] = {}
    for path in package.glob("*.py"):
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level == 1 or base.startswith("motion_module"):
                    head = base.removeprefix("motion_module").lstrip(".").split(".")[0]
                    targets = [head] if head else [alias.name for alias in node.names]
                    edges |= {t for t in targets if t in names}
            elif isinstance(node, ast.Import):
                edges |= {a.name.split(".")[1] for a in node.names
                          if a.name.startswith("motion_module.") and a.name.split(".")[1] in names}
        graph[path.stem] = edges - {path.stem}
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return stack[stack.index(target):] + [target]
            if target not in state and (found := visit(target)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_engine_has_no_import_cycles():
    graph = _engine_import_graph()
    assert "spec" in graph and "convert" in graph["spec"]  # the graph really sees relative imports
    assert _find_cycle(graph) is None, " -> ".join(_find_cycle(graph) or [])
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]  # the finder finds one
