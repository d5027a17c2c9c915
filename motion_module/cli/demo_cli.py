"""Options of ``python -m motion_module demo`` (torch-free: bad options are answered at once).

``parse_config(argv)`` returns a validated :class:`DemoConfig` or exits with status 2 after one
``error: ...`` line; :mod:`demo` runs it.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from motion_module.cli.cli import PROG, CliParser
from motion_module.errors import ParameterError
from motion_module.params.fields import FILE_FORMATS as FORMATS
from motion_module.params.request import AnimateDiffParams, ClosedLoop, OutputFormat

CLOSED_LOOP_MODES: tuple[str, ...] = tuple(mode.value for mode in ClosedLoop)

RANDOM_NOTE = ("the UNet and motion-module weights are RANDOM and a synthetic target stands in for a "
               "picture: expect a soft disc drifting from one prompt-travel keyframe's place to the next "
               "(with texture from the random UNet), not art")
# family -> (frame limit of its positional table, mid block)
FAMILIES: dict[str, tuple[int, bool]] = {"v1": (24, False), "v2": (32, True), "v3": (32, False)}


@dataclass(frozen=True)
class DemoConfig:
    """Settings of one demo run; the command-line options have the same names."""

    out: Path
    frames: int = 24
    fps: float = 8.0
    formats: tuple[str, ...] = FORMATS
    context: int = 16
    overlap: int = 4
    stride: int = 1
    steps: int = 6
    size: int = 64
    seed: int = 1
    cfg: float = 5.0
    closed_loop: str = "R-P"
    family: str = "v2"
    mm_seed: int = 0
    unet_seed: int = 0
    threads: int = 1

    def params(self, model: str = "") -> AnimateDiffParams:
        """The AnimateDiff parameters of this run (validated; raises ParameterError)."""
        return AnimateDiffParams(enable=True, model=model,
                                 formats=tuple(OutputFormat(f) for f in self.formats),
                                 video_length=self.frames, fps=self.fps, context=self.context,
                                 stride=self.stride, overlap=self.overlap,
                                 closed_loop=ClosedLoop(self.closed_loop))


def _int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _formats(text: str) -> tuple[str, ...]:
    names = [part.strip().upper() for part in text.split(",") if part.strip()]
    bad = [name for name in names if name not in FORMATS]
    if bad or not names:
        choices = ",".join(f.lower() for f in FORMATS)
        raise argparse.ArgumentTypeError(f"unknown format(s) {', '.join(bad) or '(none)'}; "
                                         f"use a comma-separated list of {choices}")
    return tuple(dict.fromkeys(names))


def build_parser() -> CliParser:
    """The ``demo`` command's options (names as in :class:`DemoConfig`)."""
    parser = CliParser(
        prog=f"{PROG} demo",
        description="Run the whole AnimateDiff pipeline (motion-module loading, injection into an "
        "SD1.5-shaped UNet, sliding context windows, prompt travel, CFG sampling, every output "
        f"format) on a tiny model on the CPU. Note: {RANDOM_NOTE}.")
    add = parser.add_argument
    at_least_0, at_least_1 = _int_at_least(0), _int_at_least(1)
    add("--out", type=Path, required=True, help="output folder (created if missing)")
    add("--frames", type=at_least_1, default=24, help="video length (default 24)")
    add("--fps", type=float, default=8.0, help="playback frames per second (default 8)")
    add("--formats", type=_formats, default=FORMATS,
        help="comma-separated subset of gif,mp4,webp,webm,png,txt (default: all)")
    add("--context", type=at_least_1, default=16, help="frames per context window (default 16)")
    add("--overlap", type=at_least_0, default=4, help="frames shared by neighbouring windows "
        "(default 4)")
    add("--stride", type=at_least_1, default=1, help="context stride levels (default 1)")
    add("--steps", type=at_least_1, default=6, help="sampling steps (default 6)")
    add("--size", type=_int_at_least(64), default=64,
        help="frame width and height in pixels, a multiple of 64 (default 64; latents: size/8)")
    add("--seed", type=at_least_0, default=1, help="noise seed (default 1)")
    add("--cfg", type=_finite, default=5.0, help="classifier-free guidance scale (default 5)")
    add("--closed-loop", choices=CLOSED_LOOP_MODES, default="R-P", help="N: no loop; R-P: windows "
        "wrap around the end; R+P: windows and prompt travel wrap; A: like R+P, and a clip no "
        "longer than the context is saved forward then backward (default R-P)")
    add("--family", choices=tuple(FAMILIES), default="v2",
        help="motion-module family to imitate (default v2)")
    add("--mm-seed", type=at_least_0, default=0, help="seed of the random motion-module weights")
    add("--threads", type=at_least_1, default=1, help="torch CPU threads (default 1: the tensors "
        "are tiny; one thread is fastest and steadiest on a shared machine)")
    return parser


def _check_out(parser: CliParser, out: Path) -> None:
    path = out.expanduser().absolute()
    for candidate in (path, *path.parents):
        if candidate.exists():
            if not candidate.is_dir():
                where = "is" if candidate == path else f"lies inside {candidate}, which is"
                parser.error(f"--out {out} {where} a file, not a folder: choose a folder path")
            return


def parse_config(argv: list[str]) -> DemoConfig:
    """Parse and validate the options; bad values end in ``parser.error`` (exit status 2)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.size % 64:
        parser.error(f"--size must be a multiple of 64 (the toy UNet halves the latents 3 times), "
                     f"got {args.size}")
    limit = FAMILIES[args.family][0]
    if args.context > limit:
        parser.error(f"--context {args.context} is more than a {args.family} motion module's "
                     f"{limit}-frame limit: use --context {limit} or less")
    _check_out(parser, args.out)
    config = DemoConfig(**vars(args))
    try:
        config.params()
    except ParameterError as exc:
        parser.error(str(exc))
    return config
