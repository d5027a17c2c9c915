"""Pure key conversions between the motion-module layouts found in the wild. No I/O, no tensor copies.

Three layouts hold the same weights under different names. ``P`` is ``down_blocks.<i>``, ``up_blocks.<i>``
or ``mid_block``; ``j`` the module index inside it; ``T`` is ``transformer_blocks.0``:

* **original** (AnimateDiff, ComfyUI/A1111 files, Lightning's ComfyUI file):
  ``P.motion_modules.j.temporal_transformer.{norm, proj_in, proj_out}`` and
  ``...T.{attention_blocks.{0,1}.{to_q, to_k, to_v, to_out.0}, norms.{0,1}, ff.net.0.proj, ff.net.2, ff_norm}``;
  positional table ``...T.attention_blocks.{0,1}.pos_encoder.pe`` ``(1, L, C)``, one per attention, optional.
* **diffusers** (``MotionAdapter``, e.g. Lightning's diffusers file): ``P.motion_modules.j.{norm, proj_in,
  proj_out}`` and ``...T.{attn1, attn2, norm1, norm2, norm3, ff}``; one table ``...T.pos_embed.pe`` used by
  both attentions (diffusers registers it as a persistent buffer, so its files normally store it).
* **hotshot** (raw HotShot-XL ``hsxl_temporal_layers``): ``P.temporal_attentions.j.`` + the original inner
  names, table ``...pos_encoder.positional_encoding``.

``to_original_layout`` maps any of them to ``original`` (the layout ``model.MotionModule`` loads strictly);
``original_to_diffusers`` goes the other way. Both keep the tensor objects; the only new tensors are
positional tables computed on request (``pe_length``) for a diffusers file that stores none.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping

import torch
from torch import Tensor

from motion_module.core.positional import sinusoidal_table
from motion_module.errors import NotAMotionModuleError

log = logging.getLogger(__name__)

LAYOUTS = ("original", "diffusers", "hotshot")
WRAPPER_PREFIXES = ("module.", "motion_module.")
"""Key prefixes added by training wrappers (DDP's ``module.``) or by re-packers; stripped before matching."""

_BLOCK = r"(?:down_blocks\.\d+|up_blocks\.\d+|mid_block)"
_ORIGINAL = re.compile(rf"^({_BLOCK}\.motion_modules\.\d+)\.temporal_transformer\.(.+)$")
_DIFFUSERS = re.compile(rf"^({_BLOCK}\.motion_modules\.\d+)\.((?:norm|proj_in|proj_out|transformer_blocks)\..+)$")
_HOTSHOT = re.compile(rf"^({_BLOCK})\.temporal_attentions\.(\d+)\.(.+)$")

# diffusers BasicTransformerBlock member -> original TemporalTransformerBlock member (inside transformer_blocks.N.)
_DIFFUSERS_TO_ORIGINAL = {
    "attn1": "attention_blocks.0",
    "attn2": "attention_blocks.1",
    "norm1": "norms.0",
    "norm2": "norms.1",
    "norm3": "ff_norm",
    "ff": "ff",
}
_ORIGINAL_TO_DIFFUSERS = {v: k for k, v in _DIFFUSERS_TO_ORIGINAL.items()}
_DIFF_INNER = re.compile(r"^transformer_blocks\.(\d+)\.(attn1|attn2|norm1|norm2|norm3|ff)\.(.+)$")
_ORIG_INNER = re.compile(r"^transformer_blocks\.(\d+)\.(attention_blocks\.[01]|norms\.[01]|ff_norm|ff)\.(.+)$")
_DIFF_PE = re.compile(r"^transformer_blocks\.(\d+)\.pos_embed\.pe$")
_OUTER = ("norm.", "proj_in.", "proj_out.")


def _layout_of(key: str) -> str | None:
    if _ORIGINAL.match(key):
        return "original"
    if _HOTSHOT.match(key):
        return "hotshot"
    if _DIFFUSERS.match(key):
        return "diffusers"
    return None


def strip_wrapper_prefixes(state_dict: Mapping[str, Tensor]) -> Mapping[str, Tensor]:
    """Remove ``module.`` / ``motion_module.`` key prefixes (repeatedly); the same object when there are none."""
    if not any(k.startswith(WRAPPER_PREFIXES) for k in state_dict):
        return state_dict
    out: dict[str, Tensor] = {}
    for key, tensor in state_dict.items():
        while key.startswith(WRAPPER_PREFIXES):
            key = key.split(".", 1)[1]
        out[key] = tensor
    return out


def detect_layout(keys: Iterable[str]) -> str:
    """``"original"``, ``"diffusers"`` or ``"hotshot"`` from key names alone; ``"unknown"`` when no key is a
    motion-module key. Wrapper prefixes (``module.``) are ignored. Raises NotAMotionModuleError when one file
    mixes layouts."""
    found: set[str] = set()
    for key in keys:
        while key.startswith(WRAPPER_PREFIXES):
            key = key.split(".", 1)[1]
        layout = _layout_of(key)
        if layout:
            found.add(layout)
    if len(found) > 1:
        raise NotAMotionModuleError(
            f"the file mixes motion-module key layouts ({', '.join(sorted(found))}); "
            "it was merged or converted incorrectly: use the original download"
        )
    return found.pop() if found else "unknown"


def _file_dtype(state_dict: Mapping[str, Tensor]) -> torch.dtype:
    for tensor in state_dict.values():
        if tensor.is_floating_point():
            return tensor.dtype
    return torch.float32


def _diffusers_key(prefix: str, rest: str) -> list[str]:
    """Original names for one diffusers key (``rest`` follows ``P.motion_modules.j.``); two for ``pe``."""
    head = f"{prefix}.temporal_transformer."
    if rest.startswith(_OUTER):
        return [head + rest]
    match = _DIFF_PE.match(rest)
    if match:
        block = f"{head}transformer_blocks.{match.group(1)}.attention_blocks."
        return [f"{block}0.pos_encoder.pe", f"{block}1.pos_encoder.pe"]
    match = _DIFF_INNER.match(rest)
    if match:
        index, member, tail = match.groups()
        return [f"{head}transformer_blocks.{index}.{_DIFFUSERS_TO_ORIGINAL[member]}.{tail}"]
    raise NotAMotionModuleError(
        f"unexpected tensor '{prefix}.{rest}' in a diffusers MotionAdapter file; only plain AnimateDiff "
        "motion adapters are supported (not SparseCtrl, PIA or LoRA files)"
    )


def _original_from(state_dict: Mapping[str, Tensor], layout: str, pe_length: int | None) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    dropped: list[str] = []
    pe_modules: dict[str, Tensor] = {}  # diffusers module prefix -> proj_in weight (for computed tables)
    for key, tensor in state_dict.items():
        if layout == "original":
            names = [key] if _ORIGINAL.match(key) else []
        elif layout == "hotshot":
            match = _HOTSHOT.match(key)
            names = []
            if match:
                block, index, rest = match.groups()
                rest = rest.replace("pos_encoder.positional_encoding", "pos_encoder.pe")
                names = [f"{block}.motion_modules.{index}.temporal_transformer.{rest}"]
        else:
            match = _DIFFUSERS.match(key)
            names = _diffusers_key(match.group(1), match.group(2)) if match else []
            if match and match.group(2) == "proj_in.weight":
                pe_modules[match.group(1)] = tensor
        if not names:
            dropped.append(key)
        for name in names:
            out[name] = tensor
    if dropped:
        log.info("ignored %d tensors that are not motion-module weights (e.g. %s)", len(dropped), dropped[0])
    if layout == "diffusers" and pe_length is not None:
        _add_missing_pe(out, pe_modules, pe_length, _file_dtype(state_dict))
    return out


def _add_missing_pe(out: dict[str, Tensor], modules: Mapping[str, Tensor], length: int, dtype: torch.dtype) -> None:
    for prefix, proj_in in modules.items():
        base = f"{prefix}.temporal_transformer.transformer_blocks.0.attention_blocks."
        if f"{base}0.pos_encoder.pe" in out:
            continue
        table = sinusoidal_table(length, int(proj_in.shape[0])).to(dtype)
        out[f"{base}0.pos_encoder.pe"] = table
        out[f"{base}1.pos_encoder.pe"] = table


def to_original_layout(state_dict: Mapping[str, Tensor], *, pe_length: int | None = None) -> dict[str, Tensor]:
    """Bring a motion-module state dict into the original AnimateDiff layout.

    Returns ``state_dict`` itself when it is already exactly that (the common case, no work). Otherwise a new
    dict holding the same tensor objects under original names; keys that are not motion-module weights (the
    rest of a full UNet, ``conv_in`` of a PIA adapter...) are dropped and counted in an INFO log line.
    A diffusers ``pos_embed.pe`` ``(1, L, C)`` becomes both attentions' ``pos_encoder.pe``. A diffusers file
    without ``pe`` stays without (the spec then decides the length) unless ``pe_length`` is given, in which case
    the sinusoidal table of that length is added in the file's dtype (diffusers' ``motion_max_seq_length``,
    32 by default). Raises NotAMotionModuleError when no key is a motion-module key.
    """
    stripped = strip_wrapper_prefixes(state_dict)
    layout = detect_layout(stripped.keys())
    if layout == "unknown":
        sample = ", ".join(list(stripped)[:3]) or "no tensors at all"
        raise NotAMotionModuleError(
            f"no AnimateDiff motion-module tensors found (first keys: {sample}); this is not a motion module: "
            "use an AnimateDiff v1/v2/v3, AnimateDiff-SDXL, HotShot-XL, AnimateLCM or Lightning file"
        )
    if layout == "original" and all(_ORIGINAL.match(k) for k in stripped):
        return stripped if isinstance(stripped, dict) else dict(stripped)
    return _original_from(stripped, layout, pe_length)


def original_to_diffusers(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The diffusers ``MotionAdapter`` layout of an original-layout state dict (same tensor objects).

    The two per-attention tables ``attention_blocks.{0,1}.pos_encoder.pe`` become the single
    ``transformer_blocks.N.pos_embed.pe`` (they must be equal; ValueError otherwise); a state dict without
    ``pe`` (AnimateLCM) gives one without ``pos_embed.pe``. Non-motion keys raise NotAMotionModuleError.
    """
    out: dict[str, Tensor] = {}
    for key, tensor in state_dict.items():
        match = _ORIGINAL.match(key)
        if not match:
            raise NotAMotionModuleError(f"'{key}' is not an original-layout motion-module key")
        prefix, rest = match.groups()
        if rest.startswith(_OUTER):
            out[f"{prefix}.{rest}"] = tensor
            continue
        inner = _ORIG_INNER.match(rest)
        if not inner:
            raise NotAMotionModuleError(f"'{key}' is not an original-layout motion-module key")
        index, member, tail = inner.groups()
        if tail == "pos_encoder.pe":
            name = f"{prefix}.transformer_blocks.{index}.pos_embed.pe"
            if name in out and not torch.equal(out[name], tensor):
                raise ValueError(f"the two positional tables of {prefix} differ; the diffusers layout holds one")
            out[name] = tensor
            continue
        out[f"{prefix}.transformer_blocks.{index}.{_ORIGINAL_TO_DIFFUSERS[member]}.{tail}"] = tensor
    return out
