"""`python -m motion_module <command> ...`: inspect, convert, sparsectrl, info, demo; help and --version.

Each command lives in the module that owns the concept; this file only dispatches. The arguments are parsed
first by the torch-free parsers of :mod:`cli` / :mod:`demo_cli`, so usage errors are answered before torch is
imported, then the command's module is imported. Whatever the input, the user gets at most one
``error: ...`` line and an exit status, never a traceback: 0 ok, 1 a command failed while running (demo) or
an unexpected internal error (``MOTION_MODULE_TRACEBACK=1`` shows its traceback), 2 bad arguments or a file
that cannot be used, 130 interrupted.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from collections.abc import Callable

from motion_module.cli.cli import (
    EXIT_USAGE,
    PROG,
    VERSION,
    CliParser,
    convert_parser,
    info_parser,
    inspect_parser,
    print_error,
    sparsectrl_parser,
)


def _demo_parser() -> CliParser:
    from motion_module.cli.demo_cli import build_parser

    return build_parser()


# name -> (module, function, one-line help, parser builder)
COMMANDS: dict[str, tuple[str, str, str, Callable[[], CliParser]]] = {
    "inspect": ("motion_module.cli.tools", "main_inspect", "describe motion-module files", inspect_parser),
    "convert": ("motion_module.cli.tools", "main_convert", "write fp16 safetensors in the AnimateDiff layout",
                convert_parser),
    "sparsectrl": ("motion_module.files.sparsectrl_file", "main_sparsectrl",
                   "write a SparseCtrl file in the names sd-webui-controlnet loads", sparsectrl_parser),
    "info": ("motion_module.cli.cli", "main_info", "print the generation parameters stored in an output",
             info_parser),
    "demo": ("motion_module.cli.demo", "main_demo", "run the whole pipeline on a tiny model (CPU, a minute)",
             _demo_parser),
}


def _usage() -> str:
    lines = [f"usage: {PROG} <command> [options]", "", "commands:"]
    lines += [f"  {name:<10} {entry[2]}" for name, entry in COMMANDS.items()]
    lines += ["", f"`{PROG} <command> --help` (or `help <command>`) describes a command's options;",
              f"`{PROG} --version` prints the version."]
    return "\n".join(lines)


def _usage_error(message: str) -> int:
    print(f"usage: {PROG} <command> [options]  (commands: {', '.join(COMMANDS)})", file=sys.stderr)
    print_error(f"{message} (see {PROG} --help)")
    return EXIT_USAGE


def _help(topic: list[str]) -> int:
    if not topic:
        print(_usage())
        return 0
    if topic[0] not in COMMANDS:
        return _usage_error(f"no command named {topic[0]!r}; choose one of {', '.join(COMMANDS)}")
    COMMANDS[topic[0]][3]().print_help()
    return 0


def _run(name: str, rest: list[str]) -> int:
    module_name, func_name, _, parser = COMMANDS[name]
    if name == "demo":  # usage errors exit 2 here, before the command's module (and torch) loads
        from motion_module.cli.demo_cli import parse_config

        parse_config(rest)
    else:
        parser().parse_args(rest)
    func = getattr(importlib.import_module(module_name), func_name)
    return int(func(rest) or 0)


def _dispatch(args: list[str]) -> int:
    if not args:
        return _usage_error("no command given")
    name, rest = args[0], args[1:]
    if name in ("-h", "--help", "help"):
        return _help(rest)
    if name in ("-V", "--version", "version"):
        print(f"motion_module {VERSION} (sd-webui-animatediff-engine)")
        return 0
    if name not in COMMANDS:
        kind = "option" if name.startswith("-") else "command"
        return _usage_error(f"unknown {kind} {name!r}; choose one of {', '.join(COMMANDS)}")
    return _run(name, rest)


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit status (never raises, never prints a traceback unless asked)."""
    try:
        return _dispatch(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2, already reported)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    except KeyboardInterrupt:
        print_error("interrupted")
        return 130
    except Exception as exc:  # a bug: one line, the traceback only on request
        if os.environ.get("MOTION_MODULE_TRACEBACK"):
            traceback.print_exc()
        print_error(f"internal error ({type(exc).__name__}: {exc}); please report it, with the output of "
                    "the same command run with MOTION_MODULE_TRACEBACK=1")
        return 1


if __name__ == "__main__":
    sys.exit(main())
