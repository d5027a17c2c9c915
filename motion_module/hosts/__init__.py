"""The hosts AnimateDiff runs in, behind the engine: one module per WebUI.

* :mod:`.a1111`: AUTOMATIC1111 WebUI 1.9/1.10 (ldm/sgm UNet; the motion modules are inserted into its blocks).
* :mod:`.forge`: Stable Diffusion WebUI Forge 2.x (``backend/``; the motion modules run through its
  ``UnetPatcher``: block-inner modifiers, the UNet function wrapper, its memory manager).

Nothing here imports a WebUI at import time: each host's own modules are imported inside the functions that need
them, so shared code loads on every host. :func:`host_unet` and :func:`is_forge` tell the hosts apart by the loaded
model (Forge's has ``forge_objects``).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..errors import IncompatibleModelError
from ..run import HostState
from .forge import forge_unet, is_forge


def host_unet(sd_model: Any, required: bool = False) -> Any:
    """The loaded checkpoint's UNet on either host; None when it has none (SD3, Flux), or with ``required`` an
    IncompatibleModelError."""
    unet = forge_unet(sd_model) if is_forge(sd_model) else getattr(getattr(sd_model, "model", None),
                                                                   "diffusion_model", None)
    if required and not isinstance(unet, nn.Module):
        raise IncompatibleModelError("AnimateDiff needs an SD1.5 or SDXL checkpoint (UNet)")
    return unet


def loaded_model(p: Any) -> Any:
    """The checkpoint request ``p`` runs with. A1111 has it loaded (``p.sd_model``); Forge loads it only after the
    scripts' ``before_process`` (``processing.manage_model_and_prompt_cache``), so it is loaded here with that same
    call (``sd_models.forge_model_reload``), which Forge then finds done."""
    from modules import sd_models

    reload = getattr(sd_models, "forge_model_reload", None)
    return p.sd_model if reload is None else reload()[0]


def host_state(p: Any, sd_model: Any) -> HostState:
    """What the host is about to run with ``sd_model``, as far as AnimateDiff must refuse it (``run.check_host``)."""
    from modules import sd_unet
    from modules.processing import StableDiffusionProcessingImg2Img

    unet, hires, forge = host_unet(sd_model), bool(getattr(p, "enable_hr", 0)), is_forge(sd_model)
    return HostState(
        upscale_button=bool(getattr(p, "txt2img_upscale", False)), custom_unet=sd_unet.current_unet is not None,
        no_unet=bool(getattr(sd_model, "is_sd3", False)) or not hasattr(unet, "input_blocks"),
        refiner=bool(getattr(p, "refiner_checkpoint", None)) and getattr(p, "refiner_switch_at", 1.0) < 1.0,
        hires=hires, img2img=isinstance(p, StableDiffusionProcessingImg2Img), forge=forge,
        hires_checkpoint=hires and getattr(p, "hr_checkpoint_name", None) not in (None, "", "Use same checkpoint"))


__all__ = ["host_state", "host_unet", "is_forge", "loaded_model"]
