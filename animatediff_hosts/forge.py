"""AnimateDiff on Stable Diffusion WebUI Forge 2.x (``backend/``), through Forge's ``UnetPatcher``.

Forge's UNet (``backend/nn/unet.py``, one class for SD1.5 and SDXL) keeps ldm's and sgm's block structure, so
:func:`injection.plan_sites` finds the same motion-module sites for every family (SD1.5: V1, V2, V3, AnimateLCM;
SDXL: AnimateDiff-SDXL, HotShot-XL). It is shared by every clone of the patcher, though, and Forge resets
``forge_objects`` before every sampling, so nothing is inserted into it. Per sampling (the script's
``process_before_every_sampling``), :meth:`ForgePatch.apply` clones ``p.sd_model.forge_objects.unet`` and gives
the clone:

* a block-inner modifier that runs each site's motion module on the output of the layer before the site
  (:func:`injection.after_layers`): the same computation as inserting it;
* a UNet function wrapper that runs the request's windows (:meth:`session.Request.denoise`: context windows,
  motion-module windows, per-frame motion scales), chained over a wrapper another extension set;
* the motion module as an extra torch module (``cast_to_unet_dtype=False``), so Forge's memory manager moves it;
* for V1 and HotShot-XL (``spec.cross_frame_groupnorm``), a group-norm wrapper: the ResBlocks' and the output's
  GroupNorm pool their statistics over the frames of each video (:func:`injection.group_norm_across_frames`).

Motion LoRAs (``<lora:v2_lora_ZoomIn:0.8>``): Forge's Lora extension (``sd_forge_lora``) keeps no per-network
strength (its ``Network.unet_multiplier`` stays 1), so :func:`motion_loras` reads the names and UNet strengths from
the prompt (``p.extra_network_data["lora"]``, ``lora.prompt_motion_loras``) and the files from the networks it
loaded; :func:`forge_patch` merges them into the motion module (``lora.applied_motion_loras``), undone exactly.
Forge's own loading never sees the file's tensors: :func:`lora_reader` (wrapping the extension's file reader)
gives it none, so it changes nothing and never unpickles a ``.ckpt``; the live tier checks the UNet is
byte-identical afterwards.

The beta schedule: Forge never reads ``add_alphas_cumprod_modifier``'s option, and its samplers read the sigmas of
``unet.model.predictor`` live (``ForgeScheduleLinker``), so :func:`forge_patch` swaps the predictor's
``alphas_cumprod``/``sigmas``/``log_sigmas`` buffers for the family's schedule and puts the very same tensors back
when it ends. Every change is owned by the ``ExitStack`` of :func:`forge_patch` (a :class:`patch.HostPatch`), as on
A1111. Only patcher methods that exist are called: a missing one is a :class:`HostUnsupportedError` naming it.

ControlNet (Forge's built-in one): :func:`video_input` gives its units their frames (batch mode, one hint row per
frame). Its ``controlnet_linked_list`` rides along on the clone, and Forge computes the control residuals for the
whole batch before calling the UNet function wrapper (``c['control']``); :meth:`RunPlan.denoise` slices every
tensor of ``c`` with the batch's rows per window, the residuals included, so no hint is swapped per window.
Nothing from Forge is imported at import time (``lib_controlnet`` only inside :func:`video_input`).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from animatediff_hosts.a1111 import A1111Host, units_video_input
from motion_module.control.controlnet import FORGE_UNITS, VideoToVideo
from motion_module.core.injection import (
    FrameState,
    Injection,
    InsertedTemporal,
    after_layers,
    group_norm_across_frames,
    plan_sites,
)
from motion_module.core.model import MotionModule
from motion_module.core.patch import Changes, HostPatch, _swap_schedule
from motion_module.core.weights import follow_host
from motion_module.errors import HostUnsupportedError
from motion_module.files.lora import (
    MOTION,
    SPATIAL,
    MotionLora,
    applied_motion_loras,
    lora_kind,
    prompt_motion_loras,
    read_spatial_lora,
    wrap_lora_loader,
)

if TYPE_CHECKING:
    from motion_module.core.session import Request
    from motion_module.params.request import AnimateDiffParams

HOST = "Forge"
LORA_READER = "load_lora_state_dict"  # the function of Forge's Lora extension (networks module) that reads the files
PATCHER_METHODS = ("clone", "add_block_inner_modifier", "set_model_unet_function_wrapper",
                   "add_extra_torch_module_during_sampling")


def is_forge(sd_model: Any) -> bool:
    """The loaded model is a Forge diffusion engine (it carries ``forge_objects``)."""
    return getattr(sd_model, "forge_objects", None) is not None


def forge_unet(sd_model: Any) -> nn.Module | None:
    """Forge's UNet module (``IntegratedUNet2DConditionModel``), or None when the model has none (Flux, SD3)."""
    unet = getattr(getattr(getattr(sd_model.forge_objects, "unet", None), "model", None), "diffusion_model", None)
    return unet if hasattr(unet, "input_blocks") else None


def video_input(p: Any, params: AnimateDiffParams, allowed_roots: Sequence[Path], edits: Changes) -> VideoToVideo:
    """Video input for Forge's built-in ControlNet (``extensions-builtin/sd_forge_controlnet``), as on A1111
    (:func:`.a1111.video_input`): every enabled unit that reads frames (its own batch folder, ``video_source``,
    ``video_path``) is switched to its batch input mode on a folder of exactly the video's frames. That ControlNet
    preprocesses each image of the folder and keeps one hint row per image of the batch (``p.batch_size``, which is
    the video length), one image alone being repeated for every frame. It runs the ControlNet on the whole batch
    before the UNet function wrapper, so the windows need no hint slicing: each window's call gets the control
    residuals of its frames' rows with the rest of the conds (``rows.slice_rows`` on ``c['control']``)."""
    def host_units() -> tuple[Callable[[Any], Any], Any]:
        code = importlib.import_module("lib_controlnet.external_code")
        return (lambda arg: code.ControlNetUnit.from_dict(arg) if isinstance(arg, dict) else arg), code.InputMode.BATCH

    return units_video_input(p, params, allowed_roots, edits, host_units, FORGE_UNITS)


def motion_loras(p: Any, lora_extension: Any, *, cached: bool = True) -> list[tuple[MotionLora, float]]:
    """The motion LoRAs of ``p``'s prompt with their UNet strengths (``lora_extension``: Forge's ``networks``
    module, None when its Lora extension is off); none when ``p`` runs without extra networks."""
    data = getattr(p, "extra_network_data", None) or {}
    if getattr(p, "disable_extra_networks", False) or lora_extension is None:
        return []
    return prompt_motion_loras(data.get("lora", []), lora_extension, cached=cached)


def lora_reader(original: Callable[[str], Any]) -> Callable[[str], Any]:
    """Forge's ``networks.load_lora_state_dict(filename)`` (its Lora extension reads every LoRA file of the prompt
    there) for AnimateDiff's LoRA files; installed once by scripts/animatediff_lora.py (``LORA_READER``).

    A motion LoRA gives no tensors: nothing for the UNet or the text encoder (AnimateDiff merges it into the motion
    module in its run). Forge's own reader would match none of its keys anyway, but it would unpickle a ``.ckpt``
    fully: its ``weights_only`` check fails under Forge's own ``torch.load`` wrapper (``modules_forge/
    patch_basic.py``), and a file that fails to load there is renamed ``*.corrupted``. The V3 domain adapter gives its
    tensors under WebUI's Lora names (``lora.read_spatial_lora``), read safely; Forge then applies it as any LoRA.
    Every other file goes to ``original``."""
    def load_lora_state_dict(filename: str) -> Any:
        kind = lora_kind(filename)
        if kind == MOTION:
            return {}
        return read_spatial_lora(filename) if kind == SPATIAL else original(filename)

    return load_lora_state_dict


def require(patcher: Any, names: Sequence[str] = PATCHER_METHODS) -> None:
    """Every ``UnetPatcher`` method the adapter calls exists; else a clear error naming the missing one."""
    missing = [name for name in names if not callable(getattr(patcher, name, None))]
    if missing:
        raise HostUnsupportedError(HOST, f"this Forge's UnetPatcher has no {', '.join(missing)} (Forge 2.x is needed)")


def schedule_buffers(alphas_cumprod: Tensor, predictor: nn.Module) -> dict[str, Tensor]:
    """The predictor buffers of a schedule: ``alphas_cumprod``, ``sigmas = sqrt((1 - a) / a)`` and their log,
    each in the dtype/device of the predictor's current one."""
    acp = alphas_cumprod.to(torch.float64)
    sigmas = ((1 - acp) / acp) ** 0.5
    values = {"alphas_cumprod": acp, "sigmas": sigmas, "log_sigmas": sigmas.log()}
    missing = [name for name in values if not isinstance(getattr(predictor, name, None), Tensor)]
    if missing:
        raise HostUnsupportedError(HOST, f"a beta schedule on this model's predictor ({type(predictor).__name__} has "
                                   f"no {', '.join(missing)}); set the beta schedule to the checkpoint's own")
    return {name: value.to(getattr(predictor, name)) for name, value in values.items()}


class ForgePatch(HostPatch):
    """The handle of :func:`forge_patch`: the injection state plus the Forge-specific per-sampling step."""

    def __init__(self, stack: ExitStack, injection: Injection, state: FrameState,
                 table: dict[tuple[int, int], InsertedTemporal]) -> None:
        super().__init__(stack, injection)
        self._state, self._table = state, table

    def apply(self, forge_objects: Any, request: Request) -> Any:
        """Clone ``forge_objects.unet`` with the motion modules, the request's windowed wrapper
        (:meth:`session.Request.denoise`) and the module in the memory manager; the clone replaces
        ``forge_objects.unet`` until the patch ends. Returns the clone."""
        patcher = forge_objects.unet
        require(patcher)
        clone = patcher.clone()
        table, injection = self._table, self.injection

        def modifier(x: Tensor, when: str, layer: Any, index: int, block: Any, options: Any) -> Tensor:
            module = table.get((id(block), index)) if when == "after" else None
            return x if module is None else module(x)

        outer = clone.model_options.get("model_function_wrapper")

        def wrapper(apply_model: Callable[..., Tensor], args: dict[str, Any]) -> Tensor:
            def unet(xs: Tensor, ts: Tensor, cs: dict[str, Any]) -> Tensor:
                if outer is None:
                    return apply_model(xs, ts, **cs)
                return outer(apply_model, {**args, "input": xs, "timestep": ts, "c": cs})

            return request.denoise(unet, args["input"], args["timestep"], args["c"])

        clone.add_block_inner_modifier(modifier)
        clone.set_model_unet_function_wrapper(wrapper)
        if injection.spec.cross_frame_groupnorm:
            require(patcher, ("set_group_norm_wrapper",))
            state = self._state
            clone.set_group_norm_wrapper(lambda norm, x, options: group_norm_across_frames(norm, x, state.window))
        clone.add_extra_torch_module_during_sampling(injection.motion_module, cast_to_unet_dtype=False)
        self.set_attribute(forge_objects, "unet", clone)
        return clone


@contextmanager
def forge_patch(sd_model: Any, motion_module: MotionModule, window: int, alphas_cumprod: Tensor | None = None,
                motion_scale: float | Sequence[float] = 1.0,
                motion_loras: Sequence[tuple[MotionLora, float]] = ()) -> Iterator[ForgePatch]:
    """All Forge changes of one AnimateDiff run (the beta schedule now, the patched UNet per sampling through
    :meth:`ForgePatch.apply`); undone in reverse order when the block ends. ``motion_loras`` (:func:`motion_loras`)
    are merged into the motion module (moved to the UNet's device first), each one checked before anything
    changes (IncompatibleModelError)."""
    unet = forge_unet(sd_model)
    if unet is None:
        raise HostUnsupportedError(HOST, f"this model ({type(sd_model).__name__}) has no SD-family UNet")
    sites = plan_sites(unet, motion_module)
    state = FrameState(window, motion_module.spec.max_frames)
    follow_host(motion_module, unet)
    with ExitStack() as stack:
        injection = Injection(motion_module, state, [site.name for site in sites])
        injection.set_motion_scale(motion_scale)
        stack.enter_context(applied_motion_loras(motion_module, motion_loras))
        if alphas_cumprod is not None:
            predictor = sd_model.forge_objects.unet.model.predictor
            stack.enter_context(_swap_schedule(predictor, schedule_buffers(alphas_cumprod, predictor)))
        patch = ForgePatch(stack, injection, state, after_layers(sites, motion_module, state))
        stack.callback(patch.close)
        yield patch


class ForgeHost(A1111Host):
    """Stable Diffusion WebUI Forge 2.x: A1111's ``modules`` API, with Forge's own model (``backend/``). The motion
    modules run through each sampling's clone of its ``UnetPatcher`` (:meth:`ForgePatch.apply`)."""

    name = HOST

    def loaded_model(self, p: Any) -> Any:
        """Forge loads the checkpoint only after the scripts' ``before_process``
        (``processing.manage_model_and_prompt_cache``): loaded here with that same call
        (``sd_models.forge_model_reload``), which Forge then finds done."""
        from modules import sd_models

        return sd_models.forge_model_reload()[0]

    def unet(self, sd_model: Any) -> nn.Module | None:
        return forge_unet(sd_model)

    def video_input(self, p: Any, params: AnimateDiffParams, edits: Changes) -> VideoToVideo:
        return video_input(p, params, self.input_roots(), edits)

    def model_patch(self, p: Any, request: Request) -> AbstractContextManager[HostPatch]:
        plan = request.planned
        assert request.module is not None
        return forge_patch(p.sd_model, request.module, plan.context, plan.schedule.alphas_cumprod(),
                           plan.motion_scales(), self.motion_loras(p))

    def wrap_lora_loader(self, networks: Any) -> Callable[[], None] | None:
        """Forge's Lora extension reads the files in ``load_lora_state_dict``: :func:`lora_reader` goes there."""
        return wrap_lora_loader(networks, lora_reader, LORA_READER)

    def motion_loras(self, p: Any) -> list[tuple[MotionLora, float]]:
        """The prompt's motion LoRAs with their UNet strengths (Forge's Lora extension keeps no strengths)."""
        return motion_loras(p, sys.modules.get("networks"), cached=bool(self.opt("animatediff_keep_models")))

    def on_denoiser(self, denoiser: Any, request: Request) -> None:
        """Nothing per call: the patched UNet function wrapper runs the windows (the step is the request's)."""

    def before_every_sampling(self, p: Any, request: Request) -> None:
        assert isinstance(request.patch, ForgePatch)
        request.patch.apply(p.sd_model.forge_objects, request)


__all__ = ["LORA_READER", "ForgeHost", "ForgePatch", "forge_patch", "forge_unet", "is_forge", "lora_reader",
           "motion_loras", "require", "schedule_buffers", "video_input"]
