"""Command-line options of ``python -m motion_module``: the parsers, torch-free, and the ``info`` command.

Every command parses its arguments here first, so a typo or a missing argument is answered at once (before
torch is imported). All errors follow one shape: the usage line(s), then exactly one line
``error: <what is wrong and what to do>`` on stderr, exit status 2; never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import NoReturn

from motion_module.errors import OutputError

VERSION = "0.1.0"  # equals pyproject.toml's [project] version (tests/test_cli.py checks it)
PROG = "python -m motion_module"
EXIT_USAGE = 2  # bad arguments, and a file that cannot be used (inspect, convert, info)


class CliParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are ``usage`` + one ``error: ...`` line (exit 2)."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"error: {message} (see {self.prog} --help)\n")


def one_line(value: object) -> str:
    """``value`` as text on one line (newlines and runs of spaces become one space)."""
    return " ".join(str(value).split())


def print_error(message: object) -> None:
    """The one ``error: ...`` line on stderr."""
    print(f"error: {one_line(message)}", file=sys.stderr)


def inspect_parser() -> CliParser:
    parser = CliParser(prog=f"{PROG} inspect", description="Describe motion-module files (reads only the "
                       "header of a .safetensors file). Exit status 2 if any file cannot be used.")
    parser.add_argument("files", nargs="+", help="motion-module files (.safetensors, .ckpt, .pt, .pth)")
    parser.add_argument("--json", action="store_true", help="one JSON object per file per line")
    parser.add_argument("--hash", action="store_true", help="also compute the SHA-256 (reads the whole file)")
    return parser


def convert_parser() -> CliParser:
    parser = CliParser(prog=f"{PROG} convert",
                       description="Write a motion module as fp16 safetensors in the original AnimateDiff layout.")
    parser.add_argument("source", help="any supported motion-module file (original, diffusers or raw HotShot-XL)")
    parser.add_argument("target", help="output file, must end in .safetensors; its folder must exist")
    parser.add_argument("--force", action="store_true", help="overwrite the output file if it exists")
    parser.add_argument("--family", choices=("v1",), help="re-label as a family with the same tensor shapes "
                        "(v1: a diffusers V1 adapter saved with max_seq_length 32, otherwise detected as v3)")
    return parser


def sparsectrl_parser() -> CliParser:
    parser = CliParser(prog=f"{PROG} sparsectrl", description="Write a SparseCtrl file (the official "
                       "v3_sd15_sparsectrl_rgb/_scribble.ckpt) as fp16 safetensors that sd-webui-controlnet loads.")
    parser.add_argument("source", help="a SparseCtrl file (.ckpt or .safetensors)")
    parser.add_argument("target", help="output file, must end in .safetensors (for WebUI's models/ControlNet)")
    parser.add_argument("--force", action="store_true", help="overwrite the output file if it exists")
    return parser


def info_parser() -> CliParser:
    parser = CliParser(prog=f"{PROG} info", description="Print the generation parameters stored in "
                       "AnimateDiff outputs. Exit status 2 if any file is not one.")
    parser.add_argument("files", nargs="+", type=Path, help="GIF/MP4/WEBM/WEBP/PNG/TXT file or PNG frame folder")
    parser.add_argument("--json", action="store_true",
                        help='print {"file", "format", "parameters"} per file, one JSON per line')
    return parser


def target_problem(target: Path, force: bool) -> str | None:
    """Why ``convert`` cannot write ``target`` (checked before reading the source), or None."""
    if target.suffix.lower() != ".safetensors":
        return f"{target}: the output must be a .safetensors file"
    if target.is_dir():
        return f"{target} is a folder: give the output a file name ending in .safetensors"
    if target.exists() and not force:
        return f"{target} already exists; pass --force to overwrite it"
    folder = target.absolute().parent
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            if not candidate.is_dir():
                return f"cannot write {target}: {candidate} is a file, not a folder"
            if candidate != folder:
                return f"cannot write {target}: the folder {target.parent} does not exist; create it first"
            return None
    return None


def main_info(argv: list[str]) -> int:
    """``python -m motion_module info FILE... [--json]``: print the stored parameters.

    Exit status 2 (one ``error:`` line per bad file, the others still printed) if any file is missing,
    unreadable or not an AnimateDiff output.
    """
    from motion_module.video.files import info_of  # the CLI imports the engine, lazily (parsing stays torch-free)

    args = info_parser().parse_args(argv)
    status = 0
    for path in args.files:
        try:
            fmt, text = info_of(path)
        except OutputError as exc:
            print_error(exc)
            status = 2
            continue
        if args.json:
            print(json.dumps({"file": str(path), "format": fmt, "parameters": text}, ensure_ascii=False))
        else:
            if len(args.files) > 1:
                print(f"==> {path} <==")
            print(text)
    return status
