"""The shape the architecture asks for: a thin adapter (scripts/animatediff.py under 300 lines) and no function
over 50 lines of code (docstrings not counted) anywhere in the shipped code."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted([*REPO.glob("scripts/*.py"), *REPO.glob("motion_module/*.py")])


def _code_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    assert node.end_lineno is not None
    lines = node.end_lineno - node.lineno + 1
    first = node.body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        assert first.end_lineno is not None
        lines -= first.end_lineno - first.lineno + 1
    return lines


def long_functions(paths: list[Path], limit: int = 50) -> list[str]:
    found = []
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _code_lines(node) > limit:
                found.append(f"{path.name}:{node.lineno} {node.name} ({_code_lines(node)} lines)")
    return found


def test_the_adapter_is_thin() -> None:
    lines = len((REPO / "scripts" / "animatediff.py").read_text(encoding="utf-8").splitlines())
    assert lines < 300, f"scripts/animatediff.py has {lines} lines: move WebUI-free logic into motion_module"


def test_no_function_over_50_lines(tmp_path: Path) -> None:
    assert len(SHIPPED) > 20
    assert long_functions(SHIPPED) == []
    sample = tmp_path / "sample.py"  # the counter counts code, not the docstring
    body = "    x = 1\n"
    sample.write_text('def f():\n    """doc\n    more"""\n' + body * 49)
    assert long_functions([sample]) == []
    sample.write_text('def f():\n    """doc"""\n' + body * 50)
    assert long_functions([sample]) == ["sample.py:1 f (51 lines)"]
