"""AnimateDiff motion-module engine: WebUI-free, pure torch.

Public API (everything else is internal and may change):

Loading and describing files
    ``load_motion_module(path, *, device="cpu", dtype=None) -> MotionModule``
        Reads .safetensors, or .ckpt/.pt through ``torch.load(weights_only=True)`` (pickles that carry code
        are refused, never run); the diffusers ``MotionAdapter`` and raw HotShot-XL layouts are converted
        on load. ``module.spec`` is a :class:`MotionModuleSpec`.
    ``detect_spec(state_dict) -> MotionModuleSpec``
        family (v1, v2, v3, animatelcm, sdxl, hotshot), base (sd15/sdxl), channels, max_frames, mid_block,
        dtype, params, ``beta_schedule`` (diffusers name), decided from tensor shapes only.

Putting modules into a UNet
    ``injected(unet, motion_module, window) -> ContextManager[Injection]``
        Inserts the modules into an ldm/sgm ``UNetModel`` (sites derived from its block structure) and
        restores the UNet exactly on exit, also on exceptions and interrupts. Every UNet call inside must
        stack whole videos: ``x`` of shape ``(B*F, C, H, W)`` with ``F = handle.window`` (set per call).
    ``animatediff_patch(host, motion_module, window, alphas_cumprod=None) -> ContextManager[HostPatch]``
        The one owner of every host change: the same plus the family's beta schedule on
        ``host.schedule_owner`` (both ``alphas_cumprod`` and ``alphas_cumprod_original``), and every
        change the adapter adds through the handle (attributes, chained ``forward`` wrappers).
        ``motion_loras=[(lora, strength), ...]`` merges motion LoRAs into the module for the block.

Motion LoRAs
    ``load_motion_lora(path, name) -> MotionLora`` reads any of their layouts safely (``lora_keys``);
    ``applied_motion_loras(motion_module, [(lora, strength), ...]) -> ContextManager[int]`` merges them
    (strength 0: no change at all) and puts the module's own weights back on exit.

Sampling
    ``context_windows(...)``, ``windowed_denoise(...)``, ``parse_prompt_travel(...)``,
    ``interpolate_conds(...)``, ``alphas_cumprod(...)``, ``FAMILY_SCHEDULES``.

Errors are subclasses of :class:`AnimateDiffError`; each message says what to do.

The names are imported on first use, so importing the package alone does not load torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for type checkers; at run time the names are imported on first use (see __getattr__)
    from motion_module.core.injection import Injection, injected
    from motion_module.core.model import MotionModule
    from motion_module.core.patch import Host, HostPatch, animatediff_patch
    from motion_module.core.prompts import interpolate_conds, parse_prompt_travel
    from motion_module.core.sampling import windowed_denoise
    from motion_module.core.schedules import FAMILY_SCHEDULES, alphas_cumprod, context_windows
    from motion_module.errors import (
        AnimateDiffError,
        CorruptFileError,
        IncompatibleModelError,
        MotionModuleError,
        NotAMotionModuleError,
        OutputError,
        ParameterError,
        TooManyFramesError,
        UnsafeFileError,
    )
    from motion_module.files.loading import load_motion_module, load_motion_module_cached
    from motion_module.files.lora import MotionLora, applied_motion_loras, load_motion_lora
    from motion_module.files.spec import MotionModuleSpec, detect_spec

# public name -> submodule. Importing the package imports nothing heavy, so `python -m motion_module`
# answers --help and argument errors without loading torch.
_HOMES = {
    **dict.fromkeys(("AnimateDiffError", "CorruptFileError", "IncompatibleModelError", "MotionModuleError",
                     "NotAMotionModuleError", "OutputError", "ParameterError", "TooManyFramesError",
                     "UnsafeFileError"), "errors"),
    "Injection": "core.injection", "injected": "core.injection",
    "load_motion_module": "files.loading", "load_motion_module_cached": "files.loading",
    "MotionModule": "core.model",
    "MotionLora": "files.lora", "applied_motion_loras": "files.lora", "load_motion_lora": "files.lora",
    "Host": "core.patch", "HostPatch": "core.patch", "animatediff_patch": "core.patch",
    "interpolate_conds": "core.prompts", "parse_prompt_travel": "core.prompts",
    "windowed_denoise": "core.sampling",
    "FAMILY_SCHEDULES": "core.schedules", "alphas_cumprod": "core.schedules", "context_windows": "core.schedules",
    "MotionModuleSpec": "files.spec", "detect_spec": "files.spec",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{home}", __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "FAMILY_SCHEDULES",
    "AnimateDiffError",
    "CorruptFileError",
    "Host",
    "HostPatch",
    "IncompatibleModelError",
    "Injection",
    "MotionLora",
    "MotionModule",
    "MotionModuleError",
    "MotionModuleSpec",
    "NotAMotionModuleError",
    "OutputError",
    "ParameterError",
    "TooManyFramesError",
    "UnsafeFileError",
    "alphas_cumprod",
    "animatediff_patch",
    "applied_motion_loras",
    "context_windows",
    "detect_spec",
    "injected",
    "interpolate_conds",
    "load_motion_lora",
    "load_motion_module",
    "load_motion_module_cached",
    "parse_prompt_travel",
    "windowed_denoise",
]
