"""The motion module's entry GroupNorm: per frame for most families, per video (per window) for SDXL."""

from __future__ import annotations

import torch
from torch import nn

from motion_module.core.model import TemporalTransformer
from motion_module.files.loading import build_motion_module
from motion_module.files.spec import detect_spec
from tests.fixtures.motion_modules import build_state_dict


def _first(family: str) -> TemporalTransformer:
    state = build_state_dict(family, seed=4)
    mm = build_motion_module(detect_spec(state), state)
    return mm.down(0, 0).temporal_transformer


def _norm_input(tt: TemporalTransformer, x: torch.Tensor, frames: int) -> torch.Tensor:
    """What the norm hands to proj_in, captured with a forward hook on proj_in."""
    seen: list[torch.Tensor] = []
    handle = tt.proj_in.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    try:
        with torch.no_grad():
            tt(x, frames)
    finally:
        handle.remove()
    return seen[0]


def test_sdxl_norm_pools_over_the_frames_of_each_video() -> None:
    tt = _first("sdxl")
    assert tt.per_video
    videos, frames, c, h, w = 2, 6, tt.norm.num_channels, 3, 3
    x = torch.randn(videos * frames, c, h, w, generator=torch.Generator().manual_seed(0)) * 3 + 1
    got = _norm_input(tt, x, frames)
    # reference: nn.GroupNorm applied to (B, C, F, H, W), then laid out as proj_in's (B*H*W, F, C)
    five_d = x.view(videos, frames, c, h, w).transpose(1, 2)
    ref = nn.functional.group_norm(five_d, tt.norm.num_groups, tt.norm.weight, tt.norm.bias, tt.norm.eps)
    ref = ref.permute(0, 3, 4, 2, 1).reshape(videos * h * w, frames, c)
    assert torch.allclose(got, ref, atol=1e-5)


def test_per_video_statistics_are_those_of_the_window() -> None:
    """Rows 0..7 as one window of 8 vs two windows of 4: the second gives each window its own statistics."""
    tt = _first("sdxl")
    x = torch.randn(8, tt.norm.num_channels, 2, 2, generator=torch.Generator().manual_seed(1))
    x[4:] = x[4:] * 5 + 2  # the second half has other statistics
    with torch.no_grad():
        split = tt(x, 4)
        alone = torch.cat([tt(x[:4], 4), tt(x[4:], 4)])
        whole = tt(x, 8)
    assert torch.allclose(split, alone, atol=1e-5)
    assert not torch.allclose(split[:4], whole[:4], atol=1e-3)


def test_other_families_normalise_each_frame() -> None:
    for family in ("v1", "v2", "v3", "animatelcm", "lightning", "hotshot"):
        tt = _first(family)
        assert not tt.per_video, family
        x = torch.randn(4, tt.norm.num_channels, 2, 2, generator=torch.Generator().manual_seed(2))
        x[2:] = x[2:] * 4 - 1
        got = _norm_input(tt, x, 4)
        with torch.no_grad():
            ref = tt.norm(x).view(1, 4, -1, 2, 2).permute(0, 3, 4, 1, 2).reshape(4, 4, -1)
        assert torch.allclose(got, ref, atol=1e-5), family
