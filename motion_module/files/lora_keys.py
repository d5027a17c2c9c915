"""Key layouts of AnimateDiff's LoRA files, read from names alone. Pure: no I/O, no tensors.

Every LoRA key names a layer (``head``) and a part: ``down`` (``(rank, in)``), ``up`` (``(out, rank)``) or ``alpha``.
The layouts found in the wild (``P`` is ``down_blocks.<i>``, ``up_blocks.<i>`` or ``mid_block``):

* **original** (AnimateDiff's ``v2_lora_*.ckpt``, its ``v3_sd15_adapter.ckpt``, and their safetensors re-saves):
  diffusers attention-processor names, ``P.motion_modules.j.temporal_transformer.transformer_blocks.0.
  attention_blocks.k.processor.to_q_lora.down.weight`` (``to_q/to_k/to_v/to_out``, ``down``/``up``); the V3
  adapter has the same form on the spatial UNet: ``P.attentions.j.transformer_blocks.0.attn1.processor...``.
* **diffusers** (the hub's ``animatediff-motion-lora-*`` repositories): the original with diffusers' motion-module
  names, ``unet.P.motion_modules.j.transformer_blocks.0.attn1.processor.to_q_lora.down.weight``.
* **peft** (what diffusers' ``save_lora_weights`` writes today): ``unet.P.motion_modules.j.transformer_blocks.0.
  attn1.to_q.lora_A.weight`` (A = down, B = up; ``to_out.0``); diffusers' older ``LoRACompatibleLinear`` form
  ``...attn1.to_q.lora.down.weight`` is read the same way.
* **kohya** (A1111-style re-saves): ``<flat name>.lora_down.weight`` / ``.lora_up.weight`` / ``.alpha``, the
  flat name being the dotted path with ``_`` (optionally after ``lora_unet_``).

``split_key`` gives ``(head, part)`` with ``head`` dotted; ``motion_target`` maps a motion head to the parameter
name in ``model.MotionModule`` (the original layout); ``kohya_unet_key`` writes a spatial head the way WebUI's
Lora extension reads it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

PREFIXES = ("base_model.model.", "unet.", "module.", "motion_module.")
_PROCESSOR = re.compile(r"^(?P<head>.+)\.processor\.(?P<proj>to_q|to_k|to_v|to_out)_lora\.(?P<part>down|up)\.weight$")
_SUFFIXES = {".lora_A.weight": "down", ".lora_B.weight": "up", ".lora.down.weight": "down", ".lora.up.weight": "up",
             ".lora_down.weight": "down", ".lora_up.weight": "up", ".alpha": "alpha"}
_FLAT_MOTION = re.compile(
    r"^(?P<site>(?:down|up)_blocks_\d+|mid_block)_motion_modules_(?P<j>\d+)_(?:temporal_transformer_)?"
    r"transformer_blocks_(?P<t>\d+)_(?P<attn>attention_blocks_[01]|attn[12])_(?P<proj>to_q|to_k|to_v|to_out(?:_0)?)$")
_MOTION = re.compile(r"^(?P<site>(?:(?:down|up)_blocks\.\d+|mid_block)\.motion_modules\.\d+)\."
                     r"(?:temporal_transformer\.)?(?P<rest>.+)$")
_UNET = re.compile(r"^(?:(?:down|up)_blocks\.\d+|mid_block)\.(?:attentions|resnets)\.\d+\..+$")
_ATTENTION = {"attn1": "attention_blocks.0", "attn2": "attention_blocks.1"}

MOTION, SPATIAL = "motion", "spatial"


def _strip(key: str) -> str:
    while key.startswith(PREFIXES):
        key = key.split(".", 1)[1]
    return key


def _unflatten(flat: str) -> str | None:
    """The dotted head of a flat motion name (``down_blocks_0_motion_modules_1_..._to_q``); None otherwise."""
    match = _FLAT_MOTION.match(flat.removeprefix("lora_unet_"))
    if not match:
        return None
    attn = match["attn"].replace("attention_blocks_", "attention_blocks.")
    proj = "to_out.0" if match["proj"].startswith("to_out") else match["proj"]
    site = match["site"].replace("_blocks_", "_blocks.")
    return f"{site}.motion_modules.{match['j']}.temporal_transformer.transformer_blocks.{match['t']}.{attn}.{proj}"


def split_key(key: str) -> tuple[str, str] | None:
    """``(dotted layer name, "down" | "up" | "alpha")`` of a LoRA key in any layout above; None for any other key
    (and for a flat name that is not a motion-module layer: that is WebUI's own kohya layout, not ours)."""
    key = _strip(key)
    match = _PROCESSOR.match(key)
    if match:
        proj = "to_out.0" if match["proj"] == "to_out" else match["proj"]
        return f"{match['head']}.{proj}", match["part"]
    for suffix, part in _SUFFIXES.items():
        if key.endswith(suffix):
            head = key[: -len(suffix)]
            if "." not in head:
                flat = _unflatten(head)
                return (flat, part) if flat else None
            return head, part
    return None


def motion_target(head: str) -> str | None:
    """The ``MotionModule`` parameter a motion-LoRA layer changes (``...to_q`` -> ``...to_q.weight``, original
    names); None when ``head`` is not inside a motion module."""
    match = _MOTION.match(head)
    if not match:
        return None
    parts = match["rest"].split(".")
    parts = [_ATTENTION.get(part, part) for part in parts]
    rest = ".".join(parts)
    if rest.endswith(".to_out"):
        rest += ".0"
    return f"{match['site']}.temporal_transformer.{rest}.weight"


def kohya_unet_key(head: str, part: str) -> str:
    """WebUI's Lora-extension name of a spatial layer's part: ``lora_unet_down_blocks_0_..._to_q.lora_down.weight``."""
    suffix = {"down": "lora_down.weight", "up": "lora_up.weight", "alpha": "alpha"}[part]
    return f"lora_unet_{head.replace('.', '_')}.{suffix}"


def classify(keys: Iterable[str]) -> str | None:
    """``"motion"`` when the keys are a motion LoRA in one of the layouts above, ``"spatial"`` when every key is a
    UNet-attention/resnet LoRA key in a dotted diffusers layout (the V3 domain adapter: WebUI's Lora extension
    cannot read those names), None otherwise (an ordinary LoRA, or anything else: not ours)."""
    heads = [split_key(key) for key in keys]
    if not heads:
        return None
    if any(h is not None and motion_target(h[0]) is not None for h in heads):
        return MOTION
    if all(h is not None and _UNET.match(h[0]) for h in heads):
        return SPATIAL
    return None


__all__ = ["MOTION", "SPATIAL", "classify", "kohya_unet_key", "motion_target", "split_key"]
