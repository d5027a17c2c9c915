"""Names sd-webui-controlnet imports from "AnimateDiff" (`scripts.animatediff_utils`).

ControlNet catches only ImportError around these calls, so nothing here may raise anything else.
Thin on purpose: it reads the AnimateDiff args of `p` through the engine's one parse point.
"""


import importlib
import logging
from dataclasses import dataclass
from typing import Any

from motion_module.core.run import PromptSchedule
from motion_module.core.session import request_of
from motion_module.params.request import from_script_args, script_slice

logger = logging.getLogger("animatediff")


@dataclass
class AnimateDiffArgs:
    """The mutable view ControlNet expects (it writes `is_i2i_batch` and reads the rest)."""

    enable: bool = False
    video_length: int = 0
    batch_size: int = 16  # the context length, under the reference's name
    closed_loop: str = "R-P"
    video_path: str | None = None
    video_source: str | None = None
    mask_path: str | None = None
    is_i2i_batch: bool = False
    prompt_scheduler: PromptSchedule | None = None  # IP-Adapter keyframes travel with it (run.PromptSchedule)


def get_animatediff_arg(p: Any) -> AnimateDiffArgs | None:
    """AnimateDiff's parameters for this job, or None when the script is absent or its args are bad."""
    try:
        run = request_of(p)
        params = run.params if run is not None else None
        if params is None:
            args = script_slice(p.scripts, p.script_args, "animatediff")
            if args is None:
                return None
            params = from_script_args(args)
        plan = run.plan if run is not None else None
        schedule = plan.prompt_schedule() if plan is not None else PromptSchedule(
            method=str(params.prompt_interpolation.value))
        return AnimateDiffArgs(enable=params.enable, video_length=plan.frames if plan else params.frames,
                               batch_size=plan.context if plan else params.run_context,
                               closed_loop=str(params.closed_loop.value), video_path=params.video_path,
                               video_source=params.video_source,
                               mask_path=params.mask_path, prompt_scheduler=schedule)
    except Exception:  # never break ControlNet's own processing
        logger.exception("AnimateDiff: could not read the AnimateDiff arguments for ControlNet")
        return None


# WebUI loads this file under its own name; ControlNet imports it at run time as
# `scripts.animatediff_utils`, which resolves only while the extension's folder is on sys.path (during
# loading): register that name now.
if __name__ != "scripts.animatediff_utils":
    importlib.import_module("scripts.animatediff_utils")
