"""The engine package never imports WebUI, gradio, ldm, sgm or scripts, nor Forge's backend or modules_forge, at
import time, and neither do the host adapters (animatediff_hosts, which import their host's modules inside functions
only); checked in a clean interpreter. The engine's modules import each other without cycles, and nothing in the
engine imports the host adapters."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHECK = (
    "import motion_module, animatediff_hosts, pkgutil, importlib, sys; "
    "names = [m.name for pkg in (motion_module, animatediff_hosts) "
    "for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.')]; "
    "[importlib.import_module(n) for n in names]; "
    "bad = [n for n in sys.modules if n.split('.')[0] in ('modules', 'gradio', 'scripts', 'ldm', 'sgm', 'backend', "
    "'modules_forge', 'huggingface_guess')]; "
    "assert not bad, bad; "
    "assert {'motion_module.files.convert', 'motion_module.files.loading', 'motion_module.cli.tools', "
    "'motion_module.core.session', 'animatediff_hosts.a1111', 'animatediff_hosts.forge'} <= set(names), names; "
    "print(len(names))"
)


def test_engine_and_hosts_import_no_webui_modules():
    result = subprocess.run([sys.executable, "-c", CHECK], cwd=REPO, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.strip()) >= 40


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package: str = "motion_module") -> dict[str, set[str]]:
    """module -> the modules of the repository it imports (at any depth of the file; relative or absolute)."""
    paths = sorted((REPO / package).rglob("*.py"))
    modules = {_module_name(path) for path in paths} | {_module_name(p) for p in (REPO / "animatediff_hosts").rglob(
        "*.py")}
    graph: dict[str, set[str]] = {}
    for path in paths:
        name, edges = _module_name(path), set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                    base = ".".join([*here[:len(here) - node.level + 1], *([base] if base else [])])
                edges |= {f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in modules}
                edges |= {base} & modules
            elif isinstance(node, ast.Import):
                edges |= {a.name for a in node.names if a.name in modules}
        graph[name] = edges - {name}
    return graph


def test_the_engine_never_imports_the_host_adapters():
    graph = import_graph()
    assert "motion_module.core.run" in graph["motion_module.core.session"]  # the graph sees the imports
    assert not {(m, t) for m, edges in graph.items() for t in edges if t.startswith("animatediff_hosts")}


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
    graph = {m: {t for t in edges if t.startswith("motion_module.") and not t.count(".") == 1 or t in (
        "motion_module.errors",)} for m, edges in import_graph().items()}
    assert "motion_module.files.convert" in graph["motion_module.files.spec"]  # the graph really sees the imports
    assert _find_cycle(graph) is None, " -> ".join(_find_cycle(graph) or [])
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]  # the finder finds one
