"""A1111 WebUI 1.9/1.10 as a host of AnimateDiff requests (:class:`A1111Host`, ``session.HostAdapter``).

WebUI's own modules are imported inside the methods, never at import time, so this file loads on any host. Forge
keeps A1111's ``modules`` API (processing, samplers, settings, paths), so ``animatediff_hosts.forge.ForgeHost`` is
this class with the model-facing methods replaced.
"""

from __future__ import annotations

import datetime
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from motion_module.control import controlnet
from motion_module.core.injection import level_channels
from motion_module.core.latent_init import img2gif_latents
from motion_module.core.patch import Changes, Host, HostPatch, animatediff_patch
from motion_module.core.run import HostState
from motion_module.core.session import HostFacts, Request
from motion_module.files import lora
from motion_module.files.lora import MotionLora
from motion_module.files.model_files import list_motion_modules, model_root
from motion_module.params import settings
from motion_module.params.request import AnimateDiffParams, alwayson_script
from motion_module.video.publish import InterpHost, VideoJob, video_job

I2I_BATCH_ATTR = "animatediff_i2i_batch_dir"  # set by scripts/animatediff_i2ibatch.py


def controlnet_script(p: Any) -> Any:
    """The always-on ControlNet script of ``p`` (sd-webui-controlnet; Forge's built-in one has the same title), or
    None."""
    return alwayson_script(p.scripts, "controlnet")


def video_input(p: Any, params: AnimateDiffParams, allowed_roots: Sequence[Path],
                edits: Changes) -> controlnet.VideoToVideo:
    """ControlNet units, video source and img2img batch frames: edit the units and the init images of ``p``
    (through ``edits``) and return the video input (its frame count is the video length)."""
    return units_video_input(p, params, allowed_roots, edits, lambda: (
        importlib.import_module("scripts.external_code").to_processing_unit,
        importlib.import_module("scripts.enums").InputMode.BATCH), controlnet.A1111_UNITS)


def units_video_input(p: Any, params: AnimateDiffParams, allowed_roots: Sequence[Path], edits: Changes,
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
        edits.set_attribute(p, "script_args", [v2v.units.get(i, arg) for i, arg in enumerate(args)])
    if batch_dir:
        edits.set_attribute(p, "init_images", p.init_images[:v2v.frames])
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


def lora_loader(original: Any) -> Any:
    """The Lora extension's ``networks.load_network(name, network_on_disk)`` for AnimateDiff's LoRA files (installed
    once by scripts/animatediff_lora.py, ``A1111Host.wrap_lora_loader``): a motion LoRA loads as an empty network
    (AnimateDiff merges it into the motion module in its run), the V3 adapter's tensors are read safely and matched
    to the UNet's layers as the extension matches any file; every other file goes to ``original``."""

    def load_network(name: str, network_on_disk: Any) -> Any:
        kind = lora.lora_kind(network_on_disk.filename)
        if kind is None:  # an ordinary LoRA (or anything else): WebUI's own loader, as without this extension
            return original(name, network_on_disk)
        net = sys.modules["network"].Network(name, network_on_disk)
        net.mtime = os.path.getmtime(network_on_disk.filename)
        if kind == lora.SPATIAL:
            _add_modules(net, lora.read_spatial_lora(network_on_disk.filename))
        return net  # a motion LoRA: nothing for the spatial UNet

    return load_network


def _add_modules(net: Any, tensors: dict[str, Any]) -> None:
    """Match renamed keys to the UNet's layers as the Lora extension matches a file's keys."""
    from modules import shared

    networks, network, sd_model = sys.modules["networks"], sys.modules["network"], shared.sd_model
    if not hasattr(sd_model, "network_layer_mapping"):
        networks.assign_network_names_to_compvis_modules(sd_model)
    mapping, matched, unmatched = sd_model.network_layer_mapping, dict[str, Any](), list[str]()
    is_sd2 = "model_transformer_resblocks" in mapping
    for key, tensor in tensors.items():
        layer_name, _, part = key.partition(".")
        sd_key = networks.convert_diffusers_name_to_compvis(layer_name, is_sd2)
        layer = mapping.get(sd_key)
        if not _fits(tensor, part, getattr(layer, "weight", None)):
            unmatched.append(key)
            continue
        matched.setdefault(sd_key, network.NetworkWeights(network_key=key, sd_key=sd_key, w={}, sd_module=layer))
        matched[sd_key].w[part] = tensor
    if unmatched:
        raise ValueError(f"{net.name}: {len(unmatched)} of {len(tensors)} tensors fit no layer of the loaded "
                         f"checkpoint (e.g. {unmatched[0]}); this LoRA is made for another base model (the V3 "
                         "adapter: SD1.5)")
    for sd_key, weights in matched.items():
        net.modules[sd_key] = next(m for t in networks.module_types if (m := t.create_module(net, weights)))


def _fits(tensor: Any, part: str, weight: Any) -> bool:
    """A LoRA part fits a layer's weight: down ``(rank, in)``, up ``(out, rank)``; ``alpha`` fits any layer."""
    if weight is None:
        return False
    return part == "alpha" or tensor.shape[1 if part == "lora_down.weight" else 0] == \
        weight.shape[1 if part == "lora_down.weight" else 0]


def sd_unet(sd_model: Any) -> nn.Module | None:
    """The ldm/sgm UNet of A1111's loaded model (None: it has none)."""
    unet = getattr(getattr(sd_model, "model", None), "diffusion_model", None)
    return unet if isinstance(unet, nn.Module) else None


def host_state(p: Any, sd_model: Any, unet: nn.Module | None) -> HostState:
    """What the host is about to run with ``sd_model``, as far as AnimateDiff must refuse it (``run.check_host``)."""
    from modules import sd_unet as webui_sd_unet
    from modules.processing import StableDiffusionProcessingImg2Img

    hires = bool(getattr(p, "enable_hr", 0))
    return HostState(
        upscale_button=bool(getattr(p, "txt2img_upscale", False)), custom_unet=webui_sd_unet.current_unet is not None,
        no_unet=bool(getattr(sd_model, "is_sd3", False)) or not hasattr(unet, "input_blocks"),
        refiner=bool(getattr(p, "refiner_checkpoint", None)) and getattr(p, "refiner_switch_at", 1.0) < 1.0,
        hires=hires, img2img=isinstance(p, StableDiffusionProcessingImg2Img),
        hires_checkpoint=hires and getattr(p, "hr_checkpoint_name", None) not in (None, "", "Use same checkpoint"))


class A1111Host:
    """AUTOMATIC1111 WebUI 1.9/1.10: the motion modules are inserted into the ldm/sgm UNet's blocks for each
    sampling (``patch.animatediff_patch``), and the sampler's inner model is wrapped to run the windows."""

    name = "A1111"

    def __init__(self, extension_dir: Path) -> None:
        self.extension_dir = extension_dir

    # ----- settings and folders ---------------------------------------------------------------------
    def opt(self, key: str, default: Any = None) -> Any:
        """A setting (``opts.data``: works before the settings page registers ours), else our default."""
        from modules import shared

        return shared.opts.data.get(key, settings.DEFAULTS.get(key) if default is None else default)

    def models_root(self) -> Path:
        return model_root(settings.model_folder(self.opt), self.extension_dir / "model")

    def list_models(self) -> list[str]:
        return list_motion_modules(self.models_root())

    def task(self) -> object:
        from modules import shared

        return shared.state.time_start

    def interrupted(self) -> bool:
        from modules import shared

        return bool(shared.state.interrupted)

    # ----- planning ---------------------------------------------------------------------------------
    def loaded_model(self, p: Any) -> Any:
        return p.sd_model

    def unet(self, sd_model: Any) -> nn.Module | None:
        return sd_unet(sd_model)

    def facts(self, p: Any) -> HostFacts:
        from modules import devices

        model = self.loaded_model(p)
        unet = self.unet(model)
        state = host_state(p, model, unet)
        return HostFacts(  # fp8_storage: a request's override is applied by WebUI only after before_process
            state, prompt=p.prompt if isinstance(p.prompt, str) else "", n_iter=int(p.n_iter),
            steps=int(p.steps or 20), cfg_scale=float(p.cfg_scale), sampler=str(p.sampler_name or ""),
            scheduler=str(getattr(p, "scheduler", "") or ""),
            base="sdxl" if getattr(model, "is_sdxl", False) else "sd15",
            channels=tuple(level_channels(unet)) if unet is not None and not state.no_unet else (),
            model_root=self.models_root(), device=devices.device, dtype=devices.dtype_unet,
            fp8_storage=p.override_settings.get("fp8_storage", self.opt("fp8_storage")),
            cached=bool(self.opt("animatediff_keep_models")), max_rows=settings.max_rows(self.opt))

    def input_roots(self) -> list[Path]:
        """The folders a request's paths may name (Settings, and WebUI's data folder)."""
        from modules import paths

        return settings.input_roots(self.opt, Path(paths.data_path))

    def video_input(self, p: Any, params: AnimateDiffParams, edits: Changes) -> controlnet.VideoToVideo:
        return video_input(p, params, self.input_roots(), edits)

    # ----- sampling ---------------------------------------------------------------------------------
    def wrap_lora_loader(self, networks: Any) -> Callable[[], None] | None:
        """Wrap the Lora extension's file loader (its ``networks`` module, None when it is off) for AnimateDiff's
        LoRA files, once; the undo, or None when nothing was wrapped (``lora.wrap_lora_loader``)."""
        return lora.wrap_lora_loader(networks, lora_loader)

    def motion_loras(self, p: Any) -> list[tuple[MotionLora, float]]:
        """The motion LoRAs of the prompt (loaded by WebUI's Lora extension as empty networks)."""
        return lora.active_motion_loras(sys.modules.get("networks"), cached=bool(self.opt("animatediff_keep_models")))

    def model_patch(self, p: Any, request: Request) -> AbstractContextManager[HostPatch]:
        plan = request.planned
        assert request.module is not None
        host = Host(unet=p.sd_model.model.diffusion_model, schedule_owner=p.sd_model)
        return animatediff_patch(host, request.module, plan.context, plan.schedule.alphas_cumprod(),
                                 plan.motion_scales(), self.motion_loras(p))

    def prepare_sampling(self, p: Any, request: Request, patch: HostPatch) -> None:
        from modules import sd_samplers
        from modules.processing import StableDiffusionProcessingImg2Img

        if isinstance(p, StableDiffusionProcessingImg2Img):
            # img2img built its sampler in p.init(), with k-diffusion sigmas from the old schedule
            patch.set_attribute(p, "sampler", sd_samplers.create_sampler(p.sampler_name, p.sd_model))
            if len(p.init_images) == 1 and p.init_latent is not None:  # one image for all frames
                img2gif(p, request.params, patch, self.opt)

    def on_denoiser(self, denoiser: Any, request: Request) -> None:
        """The sampler's inner model runs the request's windows (wrapped once per inner model)."""
        assert request.patch is not None
        request.patch.wrap_forward(denoiser.inner_model, lambda inner: self._windowed(inner, denoiser, request))

    def _windowed(self, inner: Any, denoiser: Any, request: Request) -> Callable[..., Tensor]:
        """The inner model's forward over the request's windows, each call given its frames' ControlNet hints (the
        slicer is made in the first call, after ControlNet's process() built the hints, and ends with the patch)."""
        from modules import devices

        hints: controlnet.HintSlicer | None = None

        def forward(x: Tensor, sigma: Any, **kwargs: Any) -> Tensor:
            nonlocal hints
            if hints is None:  # ControlNet's hints (built in its process()), per frame on the CPU
                assert request.patch is not None
                network = getattr(controlnet_script(denoiser.p), "latest_network", None)
                hints = request.patch.enter(controlnet.HintSlicer(
                    getattr(network, "control_params", None) or [], request.planned.frames,
                    devices.get_device_for("controlnet")))
            cond = kwargs.pop("cond", None)
            try:
                return request.denoise(lambda xs, ss, cs: inner(xs, ss, cond=cs, **kwargs), x, sigma, cond,
                                       on_frames=hints.select if hints.sliced else None)
            finally:
                hints.restore()

        return forward

    def before_every_sampling(self, p: Any, request: Request) -> None:
        """A1111 has no such hook."""

    def end_failed(self, p: Any) -> None:
        from modules.processing import Processed

        p.scripts.postprocess(p, Processed(p, []))

    # ----- postprocess ------------------------------------------------------------------------------
    def video_job(self, p: Any, request: Request) -> VideoJob:
        from modules import devices, paths, shared

        plan = request.planned
        out_dir = Path(p.outpath_samples) / "AnimateDiff" / datetime.date.today().isoformat()
        progress: Callable[[int, int], None] = lambda done, total: vars(shared.state).update(  # noqa: E731
            sampling_step=done, sampling_steps=total)
        return video_job(plan.frames, request.params, out_dir, self.opt, ping_pong=plan.ping_pong,
                         original_prompt=request.original_prompt, source_fps=request.v2v.source_fps,
                         audio=request.v2v.audio, host=InterpHost(devices.device, self.models_root(),
                                                                  Path(paths.models_path), progress))


__all__ = ["I2I_BATCH_ATTR", "A1111Host", "controlnet_script", "host_state", "img2gif", "lora_loader", "sd_unet",
           "units_video_input", "video_input"]
