"""The shape the architecture asks for: a thin adapter (scripts/animatediff.py under 300 lines, each of its hooks one
call into the engine's request session), no edit of ``p`` outside the owner of changes (``patch.Changes``), and no
function over 50 lines of code (docstrings not counted) anywhere in the shipped code."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted([*REPO.glob("scripts/*.py"), *REPO.glob("motion_module/**/*.py"),
                  *REPO.glob("animatediff_hosts/*.py")])


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


# ----- what "thin" means: one engine call per hook, and no edit of p outside the owner of changes ---------------
ADAPTER = REPO / "scripts" / "animatediff.py"
ENGINE = {"motion_module"}
NOT_HOOKS = {"title", "show", "ui"}  # the Script's description and its panel, not request hooks


def _engine_names(tree: ast.Module) -> set[str]:
    """Names the module binds to engine modules or objects (`from motion_module import x`, `import motion_module`)."""
    names = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in ENGINE:
            names.update(alias.asname or alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.asname or alias.name for alias in node.names if alias.name.split(".")[0] in ENGINE)
        elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):  # HOST = hosts.for_webui(...)
            root = _root(node.value.func)
            if root is not None and root in names:
                names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names


def _root(node: ast.AST) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Call)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


def hook_engine_calls(source: str) -> dict[str, int]:
    """For each request hook of the Script classes (and each function registered as a callback), the number of
    calls into the engine it makes."""
    tree = ast.parse(source)
    engine = _engine_names(tree)
    hooks: dict[str, int] = {}
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
        for fn in (n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name not in NOT_HOOKS):
            hooks[f"{cls.name}.{fn.name}"] = sum(isinstance(c, ast.Call) and _root(c.func) in engine
                                                 for c in ast.walk(fn))
    for call in (n.value for n in tree.body if isinstance(n, ast.Expr) and isinstance(n.value, ast.Call)):
        if _root(call.func) == "script_callbacks":  # the callback registered must itself be the engine's
            hooks[f"callback {ast.unparse(call.args[0])}"] = int(bool(call.args) and _root(call.args[0]) in engine)
    return hooks


def test_every_hook_of_the_adapter_is_one_engine_call() -> None:
    hooks = hook_engine_calls(ADAPTER.read_text(encoding="utf-8"))
    assert {"AnimateDiffScript.before_process", "AnimateDiffScript.postprocess"} <= hooks.keys()
    assert any(name.startswith("callback ") for name in hooks)
    assert hooks == dict.fromkeys(hooks, 1), hooks
    fat = ("from motion_module import session\nclass S:\n    def before_process(self, p):\n"
           "        session.start(p)\n        session.plan(p)\n    def ui(self):\n        session.a(); session.b()\n"
           "script_callbacks.on_cfg_denoiser(local_function)\n")
    assert hook_engine_calls(fat) == {"S.before_process": 2, "callback local_function": 0}


P_EDIT_EXEMPT = {  # (file, function): why it may edit p without the request's owner of changes
    ("fields.py", "apply"): "an X/Y/Z axis sets a cell's request up before it starts (X/Y/Z's own protocol)",
    ("animatediff_lora.py", "on_cfg_denoiser"): "a note in a request without AnimateDiff, which has no owner",
    ("request_guard.py", "drop_copied_guard"): "removes the original's wrappers from another extension's copy",
}


def _own_nodes(fn: ast.AST) -> list[ast.AST]:
    """The nodes of a function, without those of the functions defined inside it (each counts as its own)."""
    nodes, todo = [], list(ast.iter_child_nodes(fn))
    while todo:
        node = todo.pop()
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            nodes.append(node)
            todo.extend(ast.iter_child_nodes(node))
    return nodes


def p_edits(source: str) -> list[tuple[str, int]]:
    """(function, line) of each edit of ``p`` (an assignment or deletion of ``p.x``/``p.x[...]``, an augmented one,
    ``setattr``/``delattr`` on p, a mutation of ``vars(p)``) outside the owner of changes."""
    found = []
    for fn in (n for n in ast.walk(ast.parse(source)) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))):
        for node in _own_nodes(fn):
            targets: list[ast.AST] = []
            if isinstance(node, ast.Assign):
                targets = [e for t in node.targets for e in (t.elts if isinstance(t, ast.Tuple) else [t])]
            elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
                targets = [node.target]
            elif isinstance(node, ast.Delete):
                targets = list(node.targets)
            edited = any(isinstance(t, (ast.Attribute, ast.Subscript)) and _root(t) == "p" for t in targets)
            if isinstance(node, ast.Call):
                name = ast.unparse(node.func)
                first = node.args[0] if node.args else None
                edited |= name in ("setattr", "delattr") and isinstance(first, ast.Name) and first.id == "p"
                edited |= name.startswith("vars(p).") and name.split(".")[-1] in ("pop", "update", "clear")
            if edited:
                found.append((fn.name, node.lineno))
    return found


def test_p_is_edited_only_through_the_owner_of_changes() -> None:
    edits = {(path.name, fn): line for path in SHIPPED for fn, line in p_edits(path.read_text(encoding="utf-8"))}
    assert edits.keys() <= P_EDIT_EXEMPT.keys(), {k: v for k, v in edits.items() if k not in P_EDIT_EXEMPT}
    sample = ("def f(p, edits):\n    p.batch_size = 2\n    p.a, x = 1, 2\n    p.d['k'] = 1\n    p.n += 1\n"
              "    setattr(p, 'x', 1)\n    vars(p).pop('x')\n    edits.set_attribute(p, 'x', 1)\n    q.x = 1\n")
    assert sorted(line for _, line in p_edits(sample)) == [2, 3, 4, 5, 6, 7]
    assert p_edits("def f(p):\n    def g():\n        p.x = 1\n") == [("g", 3)]
