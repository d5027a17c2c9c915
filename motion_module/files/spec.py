"""What a motion-module checkpoint is, decided from tensor shapes (never from file names).

Input is a state dict in the original AnimateDiff layout (``convert.to_original_layout`` brings the
diffusers ``MotionAdapter`` and raw HotShot-XL layouts there first). The rules:

========== ========== ============ ============== ======================================
family      UNet levels mid block    PE table        notes
========== ========== ============ ============== ======================================
v1          4 (SD1.5)   no           24              cross-frame GroupNorm in the UNet
v2          4           yes          32              also AnimateDiff-Lightning
v3          4           no           32 (or absent)
animatelcm  4           yes          absent or 64    PE computed when absent
sdxl        3 (SDXL)    no           32              AnimateDiff-SDXL beta; motion norm per video
hotshot     3           no           24              HotShot-XL; cross-frame GroupNorm
========== ========== ============ ============== ======================================

Two different GroupNorms pool over frames in some families, and they are independent:

- the UNet's own ResBlock GroupNorm32 (``cross_frame_groupnorm``): V1 and HotShot were trained with
  statistics over all frames of a video (their UNets were 3D);
- the motion module's own GroupNorm at the entry of every temporal transformer (``motion_norm``):
  "frame" (statistics of each frame alone) for V1/V2/V3/AnimateLCM/Lightning/HotShot, "video"
  (statistics over all frames of the video, ``[b, c, f, h, w]``) for AnimateDiff-SDXL, as its
  training code applies it. Under context windows "video" means the frames of the window.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from motion_module.core.schedules import FAMILY_SCHEDULES
from motion_module.errors import NotAMotionModuleError
from motion_module.files.convert import detect_layout, strip_wrapper_prefixes, to_original_layout

FAMILIES = ("v1", "v2", "v3", "animatelcm", "sdxl", "hotshot")
_LEVEL_KEY = re.compile(r"^down_blocks\.(\d+)\.motion_modules\.0\.temporal_transformer\.proj_in\.weight$")
_PE_SUFFIX = ".pos_encoder.pe"
ANIMATELCM_PE_LEN = 64
V1_PE_LEN = 24
#: Families with the very same tensor shapes as the detected one, to which ``with_family`` can re-label a file.
SHAPE_ALTERNATIVES = {"v3": ("v1",)}
V3_OR_V1 = (
    "assumed V3: a diffusers-layout SD1.5 module without a mid block and a {pe}-frame positional table is V3, "
    "or V1 saved by diffusers with max_seq_length {pe} (the same shapes; V1 would also need the cross-frame "
    "GroupNorm). If this file is V1: python -m motion_module convert IN OUT.safetensors --family v1"
)
MOTION_NORM_PER_VIDEO = frozenset({"sdxl"})


@dataclass(frozen=True)
class MotionModuleSpec:
    """Everything the engine needs to know about a motion module, derived from its tensors."""

    family: str
    base: str  # "sd15" or "sdxl"
    channels: tuple[int, ...]  # per UNet level, e.g. (320, 640, 1280, 1280)
    max_frames: int  # frames one motion-module call can take (positional-table length)
    mid_block: bool
    dtype: torch.dtype = torch.float32
    pe_stored: bool = True
    params: int = 0
    assumption: str | None = None  # what was assumed where shapes alone cannot tell two families apart

    @property
    def cross_frame_groupnorm(self) -> bool:
        """V1 and HotShot were trained with the UNet's GroupNorm pooling statistics over all frames."""
        return self.family in ("v1", "hotshot")

    @property
    def motion_norm(self) -> str:
        """How the motion module's own GroupNorm pools: "video" (AnimateDiff-SDXL) or "frame" (the rest)."""
        return "video" if self.family in MOTION_NORM_PER_VIDEO else "frame"

    @property
    def beta_schedule(self) -> str:
        """The diffusers-style name of the beta schedule this family was trained with."""
        return FAMILY_SCHEDULES[self.family].beta_schedule

    @property
    def module_count(self) -> int:
        return 5 * len(self.channels) + int(self.mid_block)

    def describe(self) -> str:
        mid = "with" if self.mid_block else "no"
        return (
            f"{self.family} ({self.base}, channels {'/'.join(map(str, self.channels))}, "
            f"{mid} mid block, up to {self.max_frames} frames, {str(self.dtype).replace('torch.', '')})"
        )


def _levels(state_dict: Mapping[str, Tensor]) -> tuple[int, ...]:
    found: dict[int, int] = {}
    for key, tensor in state_dict.items():
        match = _LEVEL_KEY.match(key)
        if match:
            found[int(match.group(1))] = int(tensor.shape[0])
    if not found or sorted(found) != list(range(len(found))):
        raise NotAMotionModuleError(
            "no AnimateDiff motion-module tensors found (expected keys like "
            "'down_blocks.0.motion_modules.0.temporal_transformer.proj_in.weight'); "
            "this file is not a motion module: use an AnimateDiff / HotShot-XL / AnimateLCM / Lightning file"
        )
    return tuple(found[i] for i in range(len(found)))


def _pe_length(state_dict: Mapping[str, Tensor]) -> int | None:
    lengths = {int(t.shape[1]) for k, t in state_dict.items() if k.endswith(_PE_SUFFIX) and t.dim() == 3}
    if len(lengths) > 1:
        raise NotAMotionModuleError(f"inconsistent positional-table lengths {sorted(lengths)} in one file")
    return lengths.pop() if lengths else None


def _family(base: str, mid: bool, pe_len: int | None) -> tuple[str, int]:
    if base == "sdxl":
        if mid:
            raise NotAMotionModuleError("an SDXL-sized motion module with a mid block is not a known family")
        return ("hotshot", 24) if pe_len == 24 else ("sdxl", pe_len or 32)
    if mid:
        if pe_len is None or pe_len == ANIMATELCM_PE_LEN:
            return "animatelcm", ANIMATELCM_PE_LEN
        return "v2", pe_len
    if pe_len == 24:
        return "v1", 24
    return "v3", pe_len or 32


def detect_spec(state_dict: Mapping[str, Tensor]) -> MotionModuleSpec:
    """Detect family, base model, channels, frames, mid block and dtype of a motion-module state dict.

    Accepts the original AnimateDiff layout and every layout ``convert.to_original_layout`` understands.
    Raises NotAMotionModuleError when the tensors are not a motion module.
    """
    layout = detect_layout(strip_wrapper_prefixes(state_dict).keys())
    state_dict = to_original_layout(state_dict)
    channels = _levels(state_dict)
    if len(channels) == 4:
        base = "sd15"
    elif len(channels) == 3:
        base = "sdxl"
    else:
        raise NotAMotionModuleError(f"motion module with {len(channels)} UNet levels: expected 4 (SD1.5) or 3 (SDXL)")
    mid = any(k.startswith("mid_block.") for k in state_dict)
    pe_len = _pe_length(state_dict)
    family, max_frames = _family(base, mid, pe_len)
    floats = [t for k, t in state_dict.items() if t.is_floating_point() and not k.endswith(_PE_SUFFIX)]
    dtype = floats[0].dtype if floats else torch.float32
    params = sum(t.numel() for k, t in state_dict.items() if not k.endswith(_PE_SUFFIX))
    return MotionModuleSpec(
        family=family,
        base=base,
        channels=channels,
        max_frames=max_frames,
        mid_block=mid,
        dtype=dtype,
        pe_stored=pe_len is not None,
        params=params,
        assumption=V3_OR_V1.format(pe=max_frames) if (layout, family, pe_len) == ("diffusers", "v3", max_frames)
        else None,
    )


def with_family(state_dict: Mapping[str, Tensor], family: str) -> dict[str, Tensor]:
    """An original-layout state dict re-labelled as ``family``, a shape-identical alternative of what it is
    detected as (V3 -> V1: the positional tables cut to V1's 24 frames; the sinusoidal rows are the same).
    Raises NotAMotionModuleError when ``family`` is not such an alternative."""
    original = to_original_layout(state_dict)
    spec = detect_spec(original)
    if family == spec.family:
        return dict(original)
    if family not in SHAPE_ALTERNATIVES.get(spec.family, ()):
        raise NotAMotionModuleError(
            f"this {spec.family} module cannot be re-labelled as {family}: their tensors differ "
            f"(possible: {', '.join(SHAPE_ALTERNATIVES.get(spec.family, ())) or 'none'})"
        )
    if not spec.pe_stored or spec.max_frames < V1_PE_LEN:
        raise NotAMotionModuleError("re-labelling as V1 needs stored positional tables of at least 24 frames")
    return {k: (t[:, :V1_PE_LEN].clone() if k.endswith(_PE_SUFFIX) else t) for k, t in original.items()}
