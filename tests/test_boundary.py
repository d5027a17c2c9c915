"""The engine package never imports WebUI, gradio, ldm, sgm or scripts (checked in a clean interpreter)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHECK = (
    "import motion_module, pkgutil, importlib, sys; "
    "names = [m.name for m in pkgutil.iter_modules(motion_module.__path__)]; "
    "[importlib.import_module('motion_module.' + n) for n in names]; "
    "bad = [n for n in sys.modules if n.split('.')[0] in ('modules', 'gradio', 'scripts', 'ldm', 'sgm')]; "
    "assert not bad, bad; "
    "assert {'convert', 'loading', 'tools', 'spec', 'model'} <= set(names), names; "
    "print(len(names))"
)


def test_engine_imports_no_webui_modules():
    result = subprocess.run([sys.executable, "-c", CHECK], cwd=REPO, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.strip()) >= 5
