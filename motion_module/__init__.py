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

Sampling
    ``context_windows(...)``, ``windowed_denoise(...)``, ``parse_prompt_travel(...)``,
    ``interpolate_conds(...)``, ``alphas_cumprod(...)``, ``FAMILY_SCHEDULES``.

Errors are subclasses of :class:`AnimateDiffError`; each message says what to do.
"""

from __future__ import annotations

from .errors import (
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
from .injection import Injection, injected
from .loading import load_motion_module, load_motion_module_cached
from .model import MotionModule
from .patch import Host, HostPatch, animatediff_patch
from .prompts import interpolate_conds, parse_prompt_travel
from .sampling import windowed_denoise
from .schedules import FAMILY_SCHEDULES, alphas_cumprod, context_windows
from .spec import MotionModuleSpec, detect_spec

__all__ = [
    "FAMILY_SCHEDULES",
    "AnimateDiffError",
    "CorruptFileError",
    "Host",
    "HostPatch",
    "IncompatibleModelError",
    "Injection",
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
    "context_windows",
    "detect_spec",
    "injected",
    "interpolate_conds",
    "load_motion_module",
    "load_motion_module_cached",
    "parse_prompt_travel",
    "windowed_denoise",
]
