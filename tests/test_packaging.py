"""Dependencies match imports: pyproject's runtime list, install.py and the engine's imports agree."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
IMPORT_NAMES = {"pillow": "PIL", "imageio-ffmpeg": "imageio_ffmpeg"}
STDLIB_OR_OURS = {"motion_module", "__future__"}


def _list(text: str, key: str) -> list[str]:
    block = re.search(rf"^{re.escape(key)} = \[(.*?)^\]", text, re.S | re.M)
    assert block, key
    return [re.split(r"[<>=!~ ]", item)[0] for item in re.findall(r'"([^"]+)"', block[1])]


def _imported(folder: Path) -> set[str]:
    names: set[str] = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


def test_runtime_dependencies_are_imported_and_boto3_is_optional() -> None:
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    runtime = [IMPORT_NAMES.get(name, name) for name in _list(pyproject, "dependencies")]
    imported = _imported(REPO / "motion_module")
    assert set(runtime) <= imported, set(runtime) - imported  # nothing listed that nothing imports
    assert "einops" not in runtime and "boto3" not in runtime
    assert "boto3" in _list(pyproject, "s3") and "requests" not in _list(pyproject, "test")
    assert "einops" in _list(pyproject, "test")  # Stability-AI's ldm (the tests' real UNet) imports it
    third_party = {"torch", "numpy", "PIL", "imageio_ffmpeg", "safetensors", "boto3", "botocore"}
    assert imported - STDLIB_OR_OURS - third_party <= set(__import__("sys").stdlib_module_names)


def test_install_py_installs_only_runtime_dependencies_webui_lacks() -> None:
    tree = ast.parse((REPO / "install.py").read_text(encoding="utf-8"))
    pairs = next(node.value for node in ast.walk(tree) if isinstance(node, ast.Assign)
                 and getattr(node.targets[0], "id", "") == "REQUIREMENTS")
    dists = {ast.literal_eval(pair)[0] for pair in pairs.elts}  # type: ignore[attr-defined]
    assert dists == {"safetensors", "imageio-ffmpeg"}


def test_licence_is_the_full_apache_text() -> None:
    text = (REPO / "LICENSE").read_text(encoding="utf-8")
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text
    assert "END OF TERMS AND CONDITIONS" in text and "9. Accepting Warranty or Additional Liability" in text


def test_every_engine_package_is_packaged_and_nothing_else() -> None:
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    listed = set(_list(pyproject, "packages"))
    found = {".".join(path.parent.relative_to(REPO).parts) for path in (REPO / "motion_module").rglob("__init__.py")}
    assert listed == found, (listed ^ found)  # the host adapters and scripts/ need a WebUI: not in the package
