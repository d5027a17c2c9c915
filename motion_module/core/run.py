"""One AnimateDiff run, planned purely: frames, windows, prompts, schedule, and the per-call denoise.

The WebUI adapter builds a :class:`RunPlan` once per request (``plan_run``) and then only asks it
questions: which windows at this step, which per-frame prompts to hand WebUI, which conditioning
each frame gets, which ``alphas_cumprod`` to install. Nothing here touches WebUI.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from motion_module.core.injection import FrameHooks
from motion_module.core.model import MotionModule
from motion_module.core.motion_scale import frame_scales, parse_keyframes
from motion_module.core.prompts import PromptTravel, frame_prompts, interpolate_conds, parse_prompt_travel, stack_conds
from motion_module.core.sampling import slice_rows, temporal_windows, windowed_denoise
from motion_module.core.schedules import FAMILY_SCHEDULES, ScheduleSpec, context_windows
from motion_module.core.weights import FP8, fp8_wanted
from motion_module.errors import IncompatibleModelError, ParameterError, TooManyFramesError
from motion_module.files.loading import load_for_unet, short_hash
from motion_module.files.model_files import resolve_motion_module
from motion_module.files.spec import MotionModuleSpec
from motion_module.params.fields import BetaSchedule, ClosedLoop, WindowMode
from motion_module.params.infotext import to_infotext
from motion_module.params.request import AnimateDiffParams

Denoiser = Callable[[Tensor, Any, Any], Tensor]
logger = logging.getLogger("animatediff")


@dataclass(frozen=True)
class RunPlan:
    """What one AnimateDiff request will do (per video; every video of the request is alike)."""

    params: AnimateDiffParams
    spec: MotionModuleSpec
    frames: int
    context: int
    overlap: int
    travel: PromptTravel | None
    schedule: ScheduleSpec

    @property
    def cyclic(self) -> bool:
        """Prompt travel wraps from the last keyframe back to the first (R+P and A on long videos)."""
        return self.params.closed_loop in (ClosedLoop.R_PLUS_P, ClosedLoop.A) and self.frames > self.context

    @property
    def ping_pong(self) -> bool:
        """Mode A on a video no longer than the context: play it forward, then backward."""
        return self.params.closed_loop == ClosedLoop.A and self.frames <= self.context

    def motion_scales(self) -> float | tuple[float, ...]:
        """``motion_scale``, or one scale per frame from ``motion_scale_keyframes`` (``motion_scale.py``)."""
        keys = parse_keyframes(self.params.motion_scale_keyframes)
        return frame_scales(keys, self.frames, self.cyclic) if keys else self.params.motion_scale

    def windows(self, step: int) -> list[list[int]]:
        """Context windows for sampler call ``step`` (one window of all frames when they fit)."""
        return context_windows(self.frames, self.context, self.params.stride, self.overlap,
                               str(self.params.closed_loop.value), step)

    def prompts(self, prompt: str, n_iter: int) -> list[str] | None:
        """Per-frame prompts for WebUI (``p.prompt``), or None when the prompt does not travel."""
        if self.travel is None:
            return None
        return frame_prompts(self.travel) * n_iter

    def frame_conds(self, text_cond: Any) -> Any:
        """Replace the per-frame cond rows of one video by the keyframes' interpolation.

        ``text_cond`` has one row per frame: a tensor ``(F, T, D)`` or an SDXL dict of such tensors
        (``crossattn`` ``(F, T, D)``, ``vector`` ``(F, V)``); the same type comes back (unchanged when
        the prompt does not travel). Any other row count (AND / composable prompts) is a ParameterError.
        """
        rows = _rows(text_cond)
        if rows != self.frames:
            raise ParameterError("prompt", f"{rows} conditionings for {self.frames} frames: AND / composable "
                                 "prompts cannot be animated; remove AND from the prompt")
        return self.prompt_schedule().multi_cond(text_cond, self.cyclic)

    def prompt_schedule(self) -> PromptSchedule:
        """The prompt travel of this run as sd-webui-controlnet reads it (``AnimateDiffArgs.prompt_scheduler``):
        its keyframes' prompts and this run's interpolation."""
        keyframes = None if self.travel is None else {k: self.travel.prompt_at(k) for k in self.travel.keyframes}
        return PromptSchedule(keyframes, str(self.params.prompt_interpolation.value))

    def denoise(self, denoiser: Denoiser, x: Tensor, sigma: Any, cond: Any, *, step: int, frames: FrameHooks,
                max_rows: int | None = None, on_frames: Callable[[list[int]], None] | None = None) -> Tensor:
        """Run ``denoiser`` over ``x`` of ``groups * frames`` rows, one group (video) per call.

        Groups (cond, uncond, ...) are never mixed in one call, so the calls are the same whether
        WebUI batches cond and uncond together or not: the result does not depend on that setting.
        Window mode ``unet``: one call per context window (or several, up to ``max_rows`` rows).
        ``motion_module``: one call per group over all its frames, with the step's windows handed to the
        motion modules (``frames.set_temporal_windows``, cleared afterwards), and the spatial layers run over
        chunks of ``max(max_rows, context)`` rows inside it; one window of all frames is the same in both modes.
        ``frames`` (the run's :class:`injection.Injection`) learns each call's frames per video
        (``set_window``) and the video frame of each row (``select_frames``: per-frame motion scales), as does
        ``on_frames`` (ControlNet's hints).
        """
        rows = x.shape[0]
        if rows % self.frames:
            raise ParameterError(
                "video_length", f"the sampler passed {rows} latents, not a multiple of the {self.frames} "
                "frames: AND prompts and edit models are not supported with AnimateDiff")
        windows, fusion = self.windows(step), str(self.params.fusion.value)
        temporal = None
        if self.params.window_mode == WindowMode.MOTION_MODULE and windows != [list(range(self.frames))]:
            chunk = max(max_rows or 0, self.context)  # spatial layers: as many rows as a whole-UNet call
            temporal, windows = temporal_windows(windows, self.frames, fusion, chunk), [list(range(self.frames))]
            frames.set_temporal_windows(temporal)
        try:
            outputs = []
            for group in range(rows // self.frames):
                index = slice(group * self.frames, (group + 1) * self.frames)  # views: no copy of the conds
                outputs.append(windowed_denoise(
                    denoiser, x[index], slice_rows(sigma, rows, index), slice_rows(cond, rows, index),
                    num_frames=self.frames, windows=windows, fusion=fusion, max_rows=max_rows,
                    set_window=frames.set_window, on_frames=_both(frames.select_frames, on_frames)))
        finally:
            if temporal is not None:
                frames.set_temporal_windows(None)
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs)


@dataclass
class PromptSchedule:
    """Prompt travel in the form sd-webui-controlnet 1.1.455 uses for IP-Adapter prompt travel: it deep-copies
    AnimateDiff's ``prompt_scheduler``, sets ``prompt_map`` to ``{keyframe: ""}`` for a unit's keyframes and
    calls ``multi_cond(rows, closed_loop)`` on one row per frame. ``prompt_map``: frame -> prompt (None: no
    travel); ``method``: "slerp" or "lerp" (the run's prompt interpolation)."""

    prompt_map: dict[int, str] | None = None
    method: str = "slerp"

    def multi_cond(self, cond: Any, closed_loop: bool = False) -> Any:
        """``cond`` (a tensor or an SDXL dict of tensors, one row per frame) with every row replaced by the
        interpolation of the rows at the ``prompt_map`` frames (``closed_loop``: from the last back to the first
        across the end; otherwise held before the first and after the last); unchanged without a map."""
        if not self.prompt_map:
            return cond
        keys = {frame: _row(cond, frame) for frame in self.prompt_map}
        return _stack_like(cond, interpolate_conds(keys, _rows(cond), cyclic=closed_loop, method=self.method))


def _both(first: Callable[[list[int]], None],
          second: Callable[[list[int]], None] | None) -> Callable[[list[int]], None]:
    if second is None:
        return first

    def call(rows: list[int]) -> None:
        first(rows)
        second(rows)
    return call


def schedule_for(params: AnimateDiffParams, spec: MotionModuleSpec) -> ScheduleSpec:
    """``auto``: the family's training schedule; ``linear``/``scaled_linear``: SD's betas 0.00085-0.012."""
    if params.schedule == BetaSchedule.AUTO:
        return FAMILY_SCHEDULES[spec.family]
    return ScheduleSpec(str(params.schedule.value), 0.00085, 0.012, source="user choice")


def plan_run(params: AnimateDiffParams, spec: MotionModuleSpec, prompt: str) -> RunPlan:
    """Validate ``params`` against the module and plan the run. Raises ParameterError/TooManyFramesError."""
    if params.context > spec.max_frames:
        raise TooManyFramesError(
            f"AnimateDiff parameter 'context': context length {params.context} is more than this {spec.family} "
            "motion module's "
            f"{spec.max_frames}-frame limit: set context to {spec.max_frames} or less")
    frames, context = params.frames, params.run_context
    overlap = params.overlap_for(context) if context > 1 else 0
    travel = parse_prompt_travel(prompt, frames) if prompt else None
    plan = RunPlan(params, spec, frames, context, overlap, travel, schedule_for(params, spec))
    plan.motion_scales()  # a keyframe past the last frame fails here, before any sampling
    return plan


def _rows(cond: Any) -> int:
    if isinstance(cond, dict):
        return int(next(iter(cond.values())).shape[0])
    return int(cond.shape[0])


def _row(cond: Any, index: int) -> Any:
    if isinstance(cond, dict):
        return {k: v[index] for k, v in cond.items()}
    return cond[index]


def _stack_like(template: Any, rows: Sequence[Any]) -> Any:
    """``stack_conds(rows)`` in the template's dtype/device and type (A1111's SDXL ``DictWithShape``)."""
    stacked = stack_conds(rows)
    if isinstance(stacked, dict):
        converted = {k: stacked[k].to(template[k]) for k in template}
        return converted if type(template) is dict else type(template)(converted)
    return stacked.to(template)


LIGHTNING_MAX_STEPS = 8


def lightning_hint(steps: int, sampler: str, scheduler: str, cfg_scale: float, family: str = "v2") -> str | None:
    """A note when a few-step run (<= 8 steps) of a V2-shaped module does not follow AnimateDiff-Lightning's
    recipe: sampler Euler, Schedule type SGM Uniform (A1111's form of its trailing timestep spacing), CFG 1.
    Lightning has exactly V2's shapes, so it is *assumed* from the step count, and the note says so. None when
    the recipe is followed, for ordinary step counts, and for other families (AnimateLCM has its own recipe)."""
    if steps > LIGHTNING_MAX_STEPS or family != "v2":
        return None
    if sampler == "Euler" and scheduler.lower().replace(" ", "_") in ("sgm_uniform", "sgmuniform") \
            and cfg_scale == 1.0:
        return None
    return (f"AnimateDiff: {steps} steps with a V2-shaped module, assumed AnimateDiff-Lightning (same shapes as "
            "V2); its recipe is sampler Euler, Schedule type 'SGM Uniform' (its trailing timestep spacing), "
            "CFG scale 1")


@dataclass(frozen=True)
class HostState:
    """What the host is about to run, as far as AnimateDiff must refuse it (all False: fine)."""

    upscale_button: bool = False  # A1111's txt2img "Upscale" button: one image, hires pass only
    no_unet: bool = False  # SD3 and other models without ldm/sgm UNet blocks
    refiner: bool = False  # a refiner that takes over before the end
    hires_checkpoint: bool = False  # a different checkpoint for the hires pass
    custom_unet: bool = False  # an alternative SD Unet (TensorRT...) that bypasses inserted modules
    img2img: bool = False
    hires: bool = False


def check_host(state: HostState, params: AnimateDiffParams) -> None:
    """Refuse what would bypass the motion modules or cannot be animated; the error names the setting."""
    if state.upscale_button:
        raise ParameterError("enable", "the txt2img Upscale button works on one image; turn AnimateDiff off for it")
    if state.no_unet:
        raise IncompatibleModelError("AnimateDiff needs an SD1.5 or SDXL checkpoint (UNet); SD3 is not supported")
    if state.refiner:
        raise ParameterError("refiner", "the refiner swaps the UNet mid-sampling, without motion modules: "
                             "turn the refiner off when AnimateDiff is on")
    if state.hires_checkpoint:
        raise ParameterError("hr_checkpoint_name", "a different hires-fix checkpoint is not supported with "
                             "AnimateDiff: use the same checkpoint")
    if state.custom_unet:
        raise ParameterError("sd_unet", "an alternative SD Unet (e.g. TensorRT) bypasses the motion modules: "
                             "set Settings > SD Unet to None")
    if params.freeinit_enable and (state.img2img or state.hires):
        raise ParameterError("freeinit_enable", "FreeInit works in txt2img without hires fix; turn FreeInit "
                             "or hires fix off (img2img: use denoising strength instead)")


@dataclass(frozen=True)
class Prepared:
    """A request ready to run: the loaded module, the plan, the module's file name (relative to the model
    folder), the per-frame prompts for the host (None without travel), the infotext entry, and notes (what
    was assumed about the module, recipe hints) for the UI and the API response."""

    module: MotionModule
    plan: RunPlan
    model_name: str
    prompts: list[str] | None
    infotext: str
    notes: tuple[str, ...] = ()


def prepare_request(params: AnimateDiffParams, *, model_root: Path, base: str, channels: Sequence[int], prompt: str,
                    n_iter: int, img2img: bool, steps: int, sampler: str, scheduler: str, cfg_scale: float,
                    device: Any = "cpu", dtype: torch.dtype | None = None, cached: bool = True,
                    fp8_storage: object = None) -> Prepared:
    """Resolve and load the motion module for a UNet of ``base``/``channels`` (checked from the file's header
    first), plan the run and write its infotext. ``n_iter``: videos of the request (per-frame prompts repeat).
    ``fp8_storage``: WebUI's *FP8 weight* setting; when it applies (``weights.fp8_wanted``) the module's Linear
    weights are stored in float8 and computed in ``dtype``."""
    path, name = resolve_motion_module(model_root, params.model)
    weights = FP8 if fp8_wanted(fp8_storage, base, device) else None
    module = load_for_unet(path, base, channels, name=name, device=device, dtype=dtype, cached=cached, weights=weights)
    plan = plan_run(params, module.spec, prompt)
    spec = module.spec
    infotext = to_infotext(params, model=name, model_hash=short_hash(path), family=spec.family,
                           schedule_used=plan.schedule.label, frames=plan.frames, context=plan.context, img2img=img2img)
    notes = (f"AnimateDiff: {spec.assumption}" if spec.assumption else None,
             lightning_hint(steps, sampler, scheduler, cfg_scale, spec.family))
    for note in (n for n in notes if n):
        logger.warning(note)
    return Prepared(module, plan, name, plan.prompts(prompt, n_iter), infotext, tuple(n for n in notes if n))
