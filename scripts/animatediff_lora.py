"""AnimateDiff's LoRA files in WebUI's built-in Lora extension (host registration only; logic:
motion_module/files/lora.py, and per host animatediff_hosts).

The Lora extension reads a file's key names when it loads it and cannot read the two layouts AnimateDiff
publishes. One pass-through wrapper around the function that reads the files (the host's ``wrap_lora_loader``:
A1111's ``networks.load_network``, ``animatediff_hosts.a1111.lora_loader``; Forge's
``networks.load_lora_state_dict``, ``animatediff_hosts.forge.lora_reader``), installed once (at import and at app
start; idempotent, never per request) and undone when WebUI unloads this script (``lora.wrap_lora_loader``: the very
same function put back, or ours a pass-through under another extension's later wrapper), takes exactly those files
and gives every other file to the original, unchanged:

* a motion LoRA (``v2_lora_*.ckpt``, its re-saves, the diffusers and PEFT layouts) gives the spatial UNet nothing
  (Forge would otherwise unpickle a ``.ckpt`` to find no layer for it). AnimateDiff merges it into the motion module
  for its run, with the prompt's UNet strength, inside the host's model patch (``session.Request.sample``), and
  undoes it there.
* a spatial LoRA in a dotted diffusers layout (the V3 domain adapter ``v3_sd15_adapter.ckpt``) is read safely under
  the Lora extension's names, so it works as an ordinary LoRA: ``<lora:v3_sd15_adapter:0.8>``, with or without
  AnimateDiff.

Both kinds are read with AnimateDiff's safe loader (safetensors or weights-only ``torch.load``). A motion LoRA in
the prompt of a generation without AnimateDiff gets a note in the infotext (``AnimateDiff notes``), not an error.
"""

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from modules import script_callbacks

import animatediff_hosts
from motion_module.core.session import request_of
from motion_module.files import lora

logger = logging.getLogger("animatediff")
NOTES_KEY = "AnimateDiff notes"
HOST = animatediff_hosts.for_webui(Path(__file__).resolve().parent.parent)


_undo: list[Callable[[], None]] = []  # the undo of this module's wrap, while installed


def install() -> bool:
    """Wrap the Lora extension's file loader once (the host's: ``wrap_lora_loader``); False when it is not loaded
    or already wrapped."""
    undo = HOST.wrap_lora_loader(sys.modules.get("networks"))
    if undo is not None:
        _undo.append(undo)
    return undo is not None


def uninstall(*_: Any) -> None:
    """WebUI unloads this script (UI reload): undo the wrap (the loaded module's next import wraps again)."""
    while _undo:
        _undo.pop()()


def on_cfg_denoiser(params: Any) -> None:
    """First step of a generation without AnimateDiff: a note for each motion LoRA in its prompt."""
    p = getattr(params.denoiser, "p", None)
    if params.sampling_step != 0 or p is None or request_of(p) is not None:
        return
    networks = getattr(sys.modules.get("networks"), "loaded_networks", None) or []
    names = [n.name for n in networks if lora.lora_kind(n.network_on_disk.filename) == lora.MOTION]
    note = (f"AnimateDiff: motion LoRA {', '.join(names)} has no effect without AnimateDiff: enable AnimateDiff "
            "with the motion module it was made for (v2_lora_*: V2), or remove it from the prompt")
    if names and p.extra_generation_params.get(NOTES_KEY) != note:  # once per generation (hires: same note)
        p.extra_generation_params[NOTES_KEY] = note
        logger.warning(note)


install()
script_callbacks.on_app_started(lambda *_: install())
script_callbacks.on_script_unloaded(uninstall)
script_callbacks.on_cfg_denoiser(on_cfg_denoiser)
