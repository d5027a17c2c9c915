"""`python -m motion_module <command> ...`: inspect, convert, info, demo.

Each command lives in the module that owns the concept; this file only dispatches, importing lazily so
that `python -m motion_module info clip.gif` does not pay for building models.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS: dict[str, tuple[str, str, str]] = {
    "inspect": ("motion_module.tools", "main_inspect", "describe motion-module files"),
    "convert": ("motion_module.tools", "main_convert", "write fp16 safetensors in the AnimateDiff layout"),
    "info": ("motion_module.video_files", "main_info", "print the generation parameters stored in an output"),
    "demo": ("motion_module.demo", "main_demo", "run the whole pipeline on a tiny random model"),
}


def _usage() -> str:
    lines = ["usage: python -m motion_module <command> [options]", "", "commands:"]
    lines += [f"  {name:<8} {help_}" for name, (_, _, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, func_name, _ = COMMANDS[name]
    func = getattr(importlib.import_module(module_name), func_name)
    return int(func(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
