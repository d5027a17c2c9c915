"""A1111 WebUI 1.9/1.10 host pieces that read WebUI's own modules (imported inside the functions, never at import
time, so this file loads on any host)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import controlnet
from ..latent_init import img2gif_latents
from ..params import AnimateDiffParams, alwayson_script
from ..patch import HostPatch

I2I_BATCH_ATTR = "animatediff_i2i_batch_dir"  # set by scripts/animatediff_i2ibatch.py


def controlnet_script(p: Any) -> Any:
    """The always-on ControlNet script of ``p`` (sd-webui-controlnet; Forge's built-in one has the same title), or
    None."""
    return alwayson_script(p.scripts, "controlnet")


def video_input(p: Any, params: AnimateDiffParams, allowed_roots: Sequence[Path]) -> controlnet.VideoToVideo:
    """ControlNet units, video source and img2img batch frames: edit the units and the init images of ``p`` and
    return the video input (its frame count is the video length)."""
    return units_video_input(p, params, allowed_roots, lambda: (
        importlib.import_module("scripts.external_code").to_processing_unit,
        importlib.import_module("scripts.enums").InputMode.BATCH), controlnet.A1111_UNITS)


def units_video_input(p: Any, params: AnimateDiffParams, allowed_roots: Sequence[Path],
                      host_units: Callable[[], tuple[Callable[[Any], Any], Any]],
                      layout: controlnet.UnitLayout) -> controlnet.VideoToVideo:
    """:func:`video_input` for either host's ControlNet script (its title is "ControlNet" on both):
    ``host_units()`` gives its (argument -> unit object, ``InputMode.BATCH``), called only when the script is
    there; ``layout``: how its units name the batch folder."""
    cn, args, batch_mode = controlnet_script(p), list(p.script_args), None
    slots: list[tuple[int, Any]] = []
    if cn:
        to_unit, batch_mode = host_units()
        slots = controlnet.unit_slots(args, cn.args_from, cn.args_to, to_unit)
    batch_dir = getattr(p, I2I_BATCH_ATTR, None)
    v2v = controlnet.prepare(params, slots, work_dir=lambda: controlnet.work_folder(p), allowed_roots=allowed_roots,
                             i2i_batch_dir=batch_dir, init_frames=len(p.init_images) if batch_dir else 0,
                             batch_mode=batch_mode, layout=layout)
    if v2v.units:
        p.script_args = [v2v.units.get(i, arg) for i, arg in enumerate(args)]
    if batch_dir:
        p.init_images = p.init_images[:v2v.frames]
    return v2v


def img2gif(p: Any, params: AnimateDiffParams, patch: HostPatch, opt: Callable[..., Any]) -> None:
    """Blend the init image (and an optional last frame) into per-frame noise (features.md §3.9), on ``p``'s
    ``init_latent`` through ``patch`` (undone when it ends)."""
    from modules import devices, images, shared
    from modules.processing import images_tensor_to_samples
    from modules.sd_samplers_common import approximation_indexes

    last = None
    if params.last_frame is not None:
        image = images.resize_image(p.resize_mode, params.last_frame.convert("RGB"), p.width, p.height)
        pixels = torch.from_numpy(np.array(image).astype(np.float32) / 255.0).permute(2, 0, 1).unsqueeze(0)
        method = approximation_indexes.get(opt("sd_vae_encode_method", "Full"))
        last = images_tensor_to_samples(pixels.to(shared.device, dtype=devices.dtype_vae), method, p.sd_model)[0]
    latents = img2gif_latents(p.init_latent, params, seed=int(p.seeds[0]), last=last)
    if latents is not None:
        patch.set_attribute(p, "init_latent", latents)


__all__ = ["I2I_BATCH_ATTR", "controlnet_script", "img2gif", "units_video_input", "video_input"]
