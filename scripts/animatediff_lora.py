"""AnimateDiff's LoRA files in WebUI's built-in Lora extension (host registration only; logic:
motion_module/files/lora.py).

The Lora extension reads a file's key names when it loads it (``networks.load_network``) and cannot read the two
layouts AnimateDiff publishes. One pass-through wrapper around that function, installed once (at import and at
app start; idempotent, never per request) and undone when WebUI unloads this script (``lora.wrap_lora_loader``:
the very same function put back, or ours a pass-through under another extension's later wrapper), takes exactly
those files and gives every other file to the original, unchanged:

* a motion LoRA (``v2_lora_*.ckpt``, its re-saves, the diffusers and PEFT layouts) loads as an empty network: none of
  it goes into the spatial UNet. AnimateDiff merges it into the motion module for its run, with the prompt's UNet
  strength, inside the host's model patch (``session.Request.sample``), and undoes it there.
* a spatial LoRA in a dotted diffusers layout (the V3 domain adapter ``v3_sd15_adapter.ckpt``) is renamed to the
  Lora extension's names and matched to the UNet's layers the way that extension matches any file, so it works as an
  ordinary LoRA: ``<lora:v3_sd15_adapter:0.8>``, with or without AnimateDiff.

Both kinds are read with AnimateDiff's safe loader (safetensors or weights-only ``torch.load``). A motion LoRA in
the prompt of a generation without AnimateDiff gets a note in the infotext (``AnimateDiff notes``), not an error.

Forge's Lora extension reads the files elsewhere (its ``load_network`` reads none): there the same kind of wrapper
goes around ``networks.load_lora_state_dict`` (``animatediff_hosts.forge.lora_reader``): no tensors for a motion
LoRA (Forge would unpickle a ``.ckpt`` to find no layer for them), the V3 adapter's tensors read safely under the
Lora names.
"""

import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from modules import script_callbacks, shared

from animatediff_hosts import forge
from motion_module.core.session import request_of
from motion_module.files import lora

logger = logging.getLogger("animatediff")
NOTES_KEY = "AnimateDiff notes"


def _load_network(original: Any) -> Any:
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


_undo: list[Callable[[], None]] = []  # the undo of this module's wrap, while installed


def install() -> bool:
    """Wrap the Lora extension's file loader once; False when it is not loaded or already wrapped."""
    networks = sys.modules.get("networks")
    if hasattr(networks, forge.LORA_READER):  # Forge
        undo = lora.wrap_lora_loader(networks, forge.lora_reader, forge.LORA_READER)
    else:
        undo = lora.wrap_lora_loader(networks, _load_network)
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
