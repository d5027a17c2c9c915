"""`python -m motion_module`: every command's errors and exit codes.

Each error case checks the exit status, exactly one line containing ``error:`` (the first word of its line),
what it says, and that there is no traceback. Usage errors are checked in a fresh interpreter to be answered
before torch is imported.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from motion_module.__main__ import main
from motion_module.cli import tools
from motion_module.cli.cli import VERSION
from motion_module.files import loading
from tests.fixtures.motion_modules import CASES_BY_NAME, case_file, malicious_pickle

REPO = Path(__file__).resolve().parents[1]

# (argv, status, text expected in stderr); none of these may import torch
USAGE_CASES = [
    ([], 2, "no command given"),
    (["bogus"], 2, "unknown command 'bogus'"),
    (["--bogus"], 2, "unknown option '--bogus'"),
    (["help", "bogus"], 2, "no command named 'bogus'"),
    (["inspect"], 2, "required: files"),
    (["inspect", "--nope", "a.safetensors"], 2, "unrecognized arguments: --nope"),
    (["convert", "a.safetensors"], 2, "required: target"),
    (["info"], 2, "required: files"),
    (["demo"], 2, "required: --out"),
    (["demo", "--out", "x", "--frames", "0"], 2, "at least 1"),
    (["demo", "--out", "x", "--size", "100"], 2, "multiple of 64"),
    (["demo", "--out", "x", "--formats", "gif,avi"], 2, "AVI"),
    (["demo", "--out", "x", "--context", "8", "--overlap", "8"], 2, "overlap"),
    (["demo", "--out", "x", "--family", "v1", "--context", "32"], 2, "24-frame limit"),
]
HELP_CASES = [(["--help"], "commands:"), (["help"], "commands:"), (["help", "convert"], "--force"),
              (["convert", "--help"], "--force"), (["demo", "-h"], "RANDOM"), (["--version"], VERSION),
              (["version"], VERSION)]

PROBE = """
import contextlib, io, json, sys
from motion_module.__main__ import main
results = []
for argv in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(argv)
    results.append([status, out.getvalue(), err.getvalue(), "torch" in sys.modules])
print(json.dumps(results))
"""


def assert_one_error(err: str, *expected: str) -> str:
    """Exactly one ``error:`` line, first on its line; no traceback; returns that line."""
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err, err
    for text in expected:
        assert text in lines[0], (text, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def probed() -> list[list[object]]:
    argvs = [argv for argv, _, _ in USAGE_CASES] + [argv for argv, _ in HELP_CASES]
    proc = subprocess.run([sys.executable, "-c", PROBE, json.dumps(argvs)], cwd=REPO, capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    return list(json.loads(proc.stdout))


@pytest.mark.parametrize("index", range(len(USAGE_CASES)), ids=[" ".join(c[0]) or "(none)" for c in USAGE_CASES])
def test_usage_errors_answer_before_torch_loads(probed: list[list[object]], index: int) -> None:
    _, status, expected = USAGE_CASES[index]
    code, out, err, torch_loaded = probed[index]
    assert code == status and out == "" and not torch_loaded
    assert_one_error(str(err), expected)


@pytest.mark.parametrize("index", range(len(HELP_CASES)), ids=[" ".join(c[0]) for c in HELP_CASES])
def test_help_and_version_exit_0_without_torch(probed: list[list[object]], index: int) -> None:
    code, out, err, torch_loaded = probed[len(USAGE_CASES) + index]
    assert code == 0 and err == "" and not torch_loaded
    assert HELP_CASES[index][1] in str(out)


def test_real_entry_point_and_version_matches_pyproject() -> None:
    proc = subprocess.run([sys.executable, "-m", "motion_module", "convert"], cwd=REPO, capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 2 and proc.stdout == ""
    assert_one_error(proc.stderr, "required: source, target")
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    assert re.search(r'^version = "([^"]+)"', pyproject, re.M)[1] == VERSION  # type: ignore[index]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli")
    good = case_file(CASES_BY_NAME["v3"], channels=(32, 32, 64, 64))
    (root / "folder").mkdir()
    (root / "folder.safetensors").mkdir()
    (root / "note.txt").write_text("hello\n")
    (root / "binary.txt").write_bytes(b"\xff\xfe\x00bad")
    (root / "junk.bin").write_bytes(b"\x00" * 32)
    (root / "existing.safetensors").write_bytes(b"keep me")
    (root / "truncated.safetensors").write_bytes(good.read_bytes()[:1000])
    Image.new("RGB", (4, 4)).save(root / "plain.png")
    return {"root": root, "good": good, "evil": malicious_pickle(root / "evil.ckpt", root / "marker"),
            "raw": malicious_pickle(root / "raw.ckpt", root / "marker", raw=pickle.DEFAULT_PROTOCOL)}


def _cases(f: dict[str, Path]) -> list[tuple[list[str], int, tuple[str, ...]]]:
    r, good = f["root"], str(f["good"])
    return [
        (["inspect", str(r / "missing.safetensors")], 2, ("missing.safetensors", "not found")),
        (["inspect", str(r / "folder")], 2, ("is a folder",)),
        (["inspect", str(r / "note.txt")], 2, ("note.txt", "unknown file type")),
        (["inspect", str(f["evil"])], 2, ("evil.ckpt", "refused for safety", "nothing was executed")),
        (["inspect", str(f["raw"])], 2, ("raw.ckpt", "refused for safety", "nothing was executed", "open")),
        (["inspect", str(r / "truncated.safetensors")], 2, ("truncated.safetensors", "re-download")),
        (["convert", good, str(r / "nodir" / "out.safetensors")], 2, ("nodir", "does not exist")),
        (["convert", good, str(r / "folder.safetensors")], 2, ("folder.safetensors", "is a folder")),
        (["convert", good, str(r / "note.txt" / "x.safetensors")], 2, ("note.txt", "is a file")),
        (["convert", good, str(r / "existing.safetensors")], 2, ("already exists", "--force")),
        (["convert", good, str(r / "out.ckpt")], 2, ("must be a .safetensors file",)),
        (["convert", str(r / "folder"), str(r / "x.safetensors")], 2, ("is a folder",)),
        (["convert", str(f["evil"]), str(r / "x.safetensors")], 2, ("refused for safety",)),
        (["info", str(r / "missing.gif")], 2, ("does not exist",)),
        (["info", str(r / "folder")], 2, ("without PNG frames",)),
        (["info", str(r / "note.txt")], 2, ("not an AnimateDiff output",)),
        (["info", str(r / "binary.txt")], 2, ("not a text file",)),
        (["info", str(r / "plain.png")], 2, ("not an AnimateDiff output",)),
        (["info", str(r / "junk.bin")], 2, ("not a GIF",)),
        (["demo", "--out", str(r / "note.txt")], 2, ("not a folder",)),
    ]


def test_every_file_error_is_one_line(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    for argv, status, expected in _cases(files):
        assert main(argv) == status, argv
        out, err = capsys.readouterr()
        assert out == "", (argv, out)
        line = assert_one_error(err, *expected)
        assert not re.search(r"\w\.\.\.$", line)  # nothing cut off at the end
    assert (files["root"] / "existing.safetensors").read_bytes() == b"keep me"
    assert not (files["root"] / "marker").exists()
    assert sorted(p.name for p in files["root"].iterdir() if p.name.endswith(".partial")) == []


def test_a_raw_pickle_with_code_is_refused_in_one_line_and_no_library_warning(files: dict[str, Path]) -> None:
    """The real terminal: a plain ``pickle.dump`` file that would call ``open`` is named unsafe, and torch's own
    warning about the pickle protocol (printed by the warnings module, which pytest would hide) is not shown."""
    done = subprocess.run([sys.executable, "-m", "motion_module", "inspect", str(files["raw"])], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == "", done
    line = assert_one_error(done.stderr, "raw.ckpt", "refused for safety", "nothing was executed")
    assert "Warning" not in done.stderr and "re-download" not in line, done.stderr
    assert not (files["root"] / "marker").exists()


def test_convert_write_failure_blames_the_output(files: dict[str, Path], capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    target = files["root"] / "full-disk.safetensors"

    def no_space(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tools.os, "replace", no_space)
    assert main(["convert", str(files["good"]), str(target)]) == 2
    line = assert_one_error(capsys.readouterr().err, str(target), "No space left on device")
    assert files["good"].name not in line and not target.exists()
    assert not list(files["root"].glob(".full-disk*"))


def test_bugs_and_interrupts_are_one_line_too(files: dict[str, Path], capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("something odd")

    monkeypatch.setattr(tools, "inspect_file", boom)
    monkeypatch.delenv("MOTION_MODULE_TRACEBACK", raising=False)
    assert main(["inspect", str(files["good"])]) == 1
    assert_one_error(capsys.readouterr().err, "internal error", "something odd", "MOTION_MODULE_TRACEBACK=1")
    monkeypatch.setenv("MOTION_MODULE_TRACEBACK", "1")
    assert main(["inspect", str(files["good"])]) == 1
    assert "Traceback" in capsys.readouterr().err

    def interrupt(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(tools, "inspect_file", interrupt)
    assert main(["inspect", str(files["good"])]) == 130
    assert_one_error(capsys.readouterr().err, "interrupted")


def test_long_reasons_are_cut_between_words() -> None:
    reason = "word " * 100 + "end"
    short = loading._shorten(reason, 40)
    assert len(short) <= 40 and short.endswith(" ...")
    assert all(part in ("word", "...") for part in short.split())


def test_good_files_still_work(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    target = files["root"] / "converted.safetensors"
    assert main(["convert", str(files["good"]), str(target)]) == 0
    assert main(["inspect", str(target), "--json"]) == 0
    out, err = capsys.readouterr()
    assert err == "" and json.loads(out.splitlines()[-1])["family"] == "v3"
    assert os.path.getsize(target) > 0
