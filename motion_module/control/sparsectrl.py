"""SparseCtrl's temporal layers (AnimateDiff V3's sparse ControlNet) for sd-webui-controlnet.

sd-webui-controlnet 1.1.455 builds a SparseCtrl model as its own ControlNet plus temporal layers it asks
AnimateDiff for (``scripts/controlnet_sparsectrl.py``): it constructs
``scripts.animatediff_mm.MotionWrapper("", "", MotionModuleType.SparseCtrl)``, loads every tensor of the file
whose name contains ``motion_modules`` into it with ``strict=True``, and appends
``down_blocks[i].motion_modules[j]`` to its input blocks 1, 2, 4, 5, 7, 8, 10 and 11 (after their ResBlock and
attention), where each is called as ``layer(x)`` on the rows of the UNet call.

The tensors (AnimateDiff's ``animatediff/models/sparse_controlnet.py`` and
``configs/inference/sparsectrl/*.yaml``): the down blocks of a V3 motion module, 4 levels x 2 modules named
``down_blocks.<level>.motion_modules.<j>.temporal_transformer.*``, with ONE temporal self-attention per
transformer block (``attention_blocks.0``, ``norms.0``), no mid or up blocks, positional tables of 32 frames.
Current files do not store the tables; a stored one is ignored and computed, as AnimateDiff's own loader does.
The channels are read from the tensors (SD1.5: 320/640/1280/1280), so smaller test models load too.

Frames: the layers group the rows of each call exactly as the motion modules injected into the UNet do (the
same :class:`~motion_module.injection.FrameState`: whole context windows, or motion-module windows over whole
videos). So they run only inside an AnimateDiff generation, and only with a V3 motion module (SparseCtrl was
trained with V3); otherwise they raise a ParameterError naming ``enable`` or ``model`` (HTTP 422).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from motion_module.core.injection import FrameState, running_state, temporal_forward
from motion_module.core.model import TemporalModule
from motion_module.errors import NotAMotionModuleError, ParameterError

SPARSECTRL_FAMILY = "v3"
SPARSECTRL_LEVELS = 4
SPARSECTRL_MAX_FRAMES = 32
SPARSECTRL_ATTENTIONS = 1
_PE = ".pos_encoder.pe"
_PROJ_IN = re.compile(r"^down_blocks\.(\d+)\.motion_modules\.(\d+)\.temporal_transformer\.proj_in\.weight$")


def sparsectrl_channels(state_dict: Mapping[str, Tensor]) -> tuple[int, ...]:
    """Channels per level of SparseCtrl's temporal layers, read from ``proj_in``; raises NotAMotionModuleError
    unless the tensors are 4 levels x 2 modules of down blocks only."""
    found: dict[int, dict[int, int]] = {}
    for key, tensor in state_dict.items():
        if (match := _PROJ_IN.match(key)) is not None:
            found.setdefault(int(match.group(1)), {})[int(match.group(2))] = int(tensor.shape[0])
    others = sorted({key.split(".")[0] for key in state_dict if not key.startswith("down_blocks.")})
    levels = sorted(found)
    if others or levels != list(range(SPARSECTRL_LEVELS)) or any(sorted(found[i]) != [0, 1] for i in levels):
        layout = {level: sorted(found[level]) for level in levels}
        raise NotAMotionModuleError(
            f"not SparseCtrl's temporal layers: expected down_blocks 0-3 with motion_modules 0 and 1 each and "
            f"nothing else, got down_blocks {layout}{f' and {others}' if others else ''}; use an official "
            "SparseCtrl file (v3_sd15_sparsectrl_rgb / _scribble) in the layout ControlNet loads")
    return tuple(found[level][0] for level in levels)


def _running_v3() -> FrameState:
    state = running_state()
    if state is None:
        raise ParameterError("enable", "a ControlNet unit uses a SparseCtrl model, whose temporal layers need an "
                             "AnimateDiff generation: enable AnimateDiff with a V3 motion module, or choose "
                             "another ControlNet model")
    if state.family != SPARSECTRL_FAMILY:
        raise ParameterError("model", f"a ControlNet unit uses a SparseCtrl model, which works only with an "
                             f"AnimateDiff V3 motion module (it was trained with V3), but the motion module is "
                             f"{state.family or 'not V3'}: choose a V3 motion module (e.g. v3_sd15_mm), or "
                             "remove the SparseCtrl unit")
    return state


class SparseCtrlTemporal(TemporalModule):
    """One SparseCtrl temporal layer: ``forward(x)`` groups the rows of the UNet call in progress by its
    frame state (``forward(x, num_frames)``: explicit videos of ``num_frames`` rows)."""

    def __init__(self, dim: int) -> None:
        super().__init__(dim, SPARSECTRL_MAX_FRAMES, attentions=SPARSECTRL_ATTENTIONS)

    def forward(self, x: Tensor, num_frames: int | None = None) -> Tensor:
        if num_frames is not None:
            return super().forward(x, num_frames)
        return temporal_forward(self, _running_v3(), x)


class SparseCtrlLevel(nn.Module):
    """The two temporal layers of one level: ``motion_modules.0`` and ``.1``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.motion_modules = nn.ModuleList([SparseCtrlTemporal(dim) for _ in range(2)])


class SparseCtrlMotion(nn.Module):
    """SparseCtrl's temporal layers as ``down_blocks[level].motion_modules[j]``. Empty until
    :meth:`load_state_dict`, which builds the levels from the tensors' shapes and then loads them."""

    def __init__(self) -> None:
        super().__init__()
        self.down_blocks = nn.ModuleList()

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        """Build the levels for ``state_dict`` (original key layout; positional tables, if stored, are ignored
        and computed) and load it. ``strict``: any missing or unexpected tensor raises NotAMotionModuleError."""
        tensors = {key: value for key, value in state_dict.items() if not key.endswith(_PE)}
        channels = sparsectrl_channels(tensors)
        self.down_blocks = nn.ModuleList([SparseCtrlLevel(c) for c in channels])
        result = super().load_state_dict(tensors, strict=False, assign=assign)
        missing = [key for key in result.missing_keys if not key.endswith(_PE)]
        if strict and (missing or result.unexpected_keys):
            raise NotAMotionModuleError(
                f"SparseCtrl temporal layers: missing {missing[:4]}{' ...' if len(missing) > 4 else ''}, "
                f"unexpected {result.unexpected_keys[:4]}{' ...' if len(result.unexpected_keys) > 4 else ''} "
                "(one temporal self-attention per block, as AnimateDiff's SparseCtrl files have)")
        return result


__all__ = ["SPARSECTRL_MAX_FRAMES", "SparseCtrlLevel", "SparseCtrlMotion", "SparseCtrlTemporal",
           "sparsectrl_channels"]
