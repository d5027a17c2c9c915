"""Parity: the tiny real ldm UNet with our modules inserted vs diffusers' UNetMotionModel, same weights.

Both sides start from the same random weights: the ldm UNet is converted with diffusers' own
``convert_ldm_unet_checkpoint``; the motion module (original AnimateDiff layout) is converted to the
``MotionAdapter`` layout with ``motion_module.convert.original_to_diffusers`` (the Lightning case starts
from a diffusers-layout file and goes the other way, through our loader).

diffusers' ``AnimateDiffTransformer3D`` applies the module's GroupNorm to a (B, C, F, H, W) tensor, i.e.
with statistics over all frames of a video. AnimateDiff-SDXL's training code does the same, so the SDXL
case runs diffusers unpatched (and a per-frame norm on our side is the negative control that must fail).
The SD1.5 families' original code normalises each frame separately; for them we wrap that one ``norm`` so
diffusers also normalises per frame (``spec.motion_norm == "frame"``); everything else runs unmodified.

SDXL side: the tiny SDXL-shaped ldm UNet (3 levels, no attention at the first, 9/1/9 blocks) against a
diffusers ``UNet2DConditionModel`` of the same layout converted from its weights, then
``UNetMotionModel.from_unet2d`` with an SDXL-shaped ``MotionAdapter`` (3 levels, no mid block). The text-time
(``add_embedding``) path is left out on both sides: it only changes the time embedding, not the motion path.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from motion_module.core.injection import injected
from motion_module.core.model import TemporalTransformer
from motion_module.files.convert import original_to_diffusers, to_original_layout
from motion_module.files.loading import build_motion_module
from motion_module.files.spec import detect_spec
from tests.fixtures.motion_modules import build_state_dict
from tests.fixtures.unets import tiny_unet, unet_inputs

diffusers = pytest.importorskip("diffusers")

FRAMES, VIDEOS, TOL = 16, 2, 1e-5


class PerFrameGroupNorm(nn.Module):
    """Applies a GroupNorm to each frame of a (B, C, F, H, W) tensor, as the original AnimateDiff does."""

    def __init__(self, norm: nn.GroupNorm) -> None:
        super().__init__()
        self.norm = norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, f, h, w = x.shape
        y = self.norm(x.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w))
        return y.reshape(b, f, c, h, w).permute(0, 2, 1, 3, 4)


LAYOUTS = {  # diffusers' block types of the tiny ldm UNets (tests/fixtures/unets.py)
    "sd15": ((32, 64, 128, 128), ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
             ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3),
    "sdxl": ((32, 64, 128), ("DownBlock2D",) + ("CrossAttnDownBlock2D",) * 2,
             ("CrossAttnUpBlock2D",) * 2 + ("UpBlock2D",)),
}


def diffusers_unet2d(ldm_unet: nn.Module, base: str = "sd15") -> nn.Module:
    from diffusers import UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    channels, down, up = LAYOUTS[base]
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=channels,
        down_block_types=down, up_block_types=up, cross_attention_dim=32, attention_head_dim=8, norm_num_groups=32,
    )
    checkpoint = {f"model.diffusion_model.{k}": v for k, v in ldm_unet.state_dict().items()}
    unet.load_state_dict(convert_ldm_unet_checkpoint(checkpoint, dict(unet.config)), strict=True)
    return unet.eval()


def diffusers_motion_unet(unet2d: nn.Module, adapter_sd: dict[str, torch.Tensor], mid: bool,
                          per_frame: bool = True) -> nn.Module:
    """diffusers' motion UNet; ``per_frame`` wraps each motion norm (SD1.5 families), else unpatched (SDXL)."""
    from diffusers import MotionAdapter, UNetMotionModel

    channels = tuple(unet2d.config.block_out_channels)
    adapter = MotionAdapter(block_out_channels=channels, motion_layers_per_block=2,
                            motion_num_attention_heads=8, motion_norm_num_groups=32, motion_max_seq_length=32,
                            use_motion_mid_block=mid)
    adapter.load_state_dict(adapter_sd, strict=False)
    missing = set(adapter.state_dict()) - set(adapter_sd)
    assert all(k.endswith("pos_embed.pe") for k in missing), sorted(missing)[:5]
    model = UNetMotionModel.from_unet2d(unet2d, adapter).eval()
    blocks = [m for m in model.modules() if type(m).__name__ == "AnimateDiffTransformer3D"]
    assert len(blocks) == 5 * len(channels) + int(mid)
    for block in blocks if per_frame else ():
        block.norm = PerFrameGroupNorm(block.norm)  # the one documented patch (see module docstring)
    return model


@pytest.fixture(scope="module")
def ldm_unet() -> nn.Module:
    return tiny_unet("sd15", seed=11)


@pytest.fixture(scope="module")
def unet2d(ldm_unet: nn.Module) -> nn.Module:
    return diffusers_unet2d(ldm_unet)


def _inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return unet_inputs(FRAMES, videos=VIDEOS, seed=5)


def ours(ldm_unet: nn.Module, original_sd: dict[str, torch.Tensor], x: torch.Tensor,
         per_frame: bool | None = None) -> torch.Tensor:
    """Our UNet call; ``per_frame`` forces the motion norm's pooling (None: the family's own)."""
    mm = build_motion_module(detect_spec(original_sd), original_sd)
    if per_frame is not None:
        for module in mm.modules():
            if isinstance(module, TemporalTransformer):
                module.per_video = not per_frame
    _, t, c = _inputs()
    with injected(ldm_unet, mm, FRAMES), torch.no_grad():
        return ldm_unet(x, t, c)


def theirs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    _, t, c = _inputs()
    sample = x.view(VIDEOS, FRAMES, *x.shape[1:]).transpose(1, 2)
    with torch.no_grad():
        out = model(sample, t[::FRAMES], encoder_hidden_states=c).sample  # per-frame rows, as diffusers 0.42 expects
    return out.transpose(1, 2).reshape(x.shape)


CASES = [("v2", "original"), ("v3", "original"), ("lightning", "diffusers")]


@pytest.mark.parametrize(("family", "layout"), CASES)
def test_parity_with_diffusers(ldm_unet: nn.Module, unet2d: nn.Module, family: str, layout: str) -> None:
    stored = build_state_dict(family, seed=21, layout=layout)
    original = dict(to_original_layout(stored))
    adapter_sd = stored if layout == "diffusers" else original_to_diffusers(original)
    spec = detect_spec(stored)
    assert spec.family == ("v2" if family == "lightning" else family)
    model = diffusers_motion_unet(unet2d, adapter_sd, spec.mid_block)
    x, _, _ = _inputs()
    a, b = ours(ldm_unet, original, x), theirs(model, x)
    diff = (a - b).abs().max().item()
    print(f"parity {family}/{layout}: max abs diff {diff:.3g} (output mean abs {a.abs().mean():.3g})")
    assert diff <= TOL

    # Negative control 1: frames shuffled on one side only must break parity.
    perm = torch.randperm(FRAMES, generator=torch.Generator().manual_seed(0))
    shuffled = x.view(VIDEOS, FRAMES, *x.shape[1:])[:, perm].reshape(x.shape)
    shuffled_out = theirs(model, shuffled).view(VIDEOS, FRAMES, *x.shape[1:])
    unshuffled = torch.empty_like(shuffled_out)
    unshuffled[:, perm] = shuffled_out
    assert (a - unshuffled.reshape(x.shape)).abs().max().item() > 100 * TOL

    # Negative control 2: two modules swapped on our side must break parity.
    swapped = dict(original)
    first = "down_blocks.1.motion_modules.0.temporal_transformer."
    second = "down_blocks.1.motion_modules.1.temporal_transformer."
    for key in [k for k in original if k.startswith(first)]:
        other = second + key[len(first):]
        swapped[key], swapped[other] = original[other], original[key]
    assert (ours(ldm_unet, swapped, x) - b).abs().max().item() > 100 * TOL


@pytest.fixture(scope="module")
def ldm_unet_xl() -> nn.Module:
    return tiny_unet("sdxl", seed=12)


@pytest.mark.parametrize("layout", ["original", "diffusers"])
def test_sdxl_parity_with_unpatched_diffusers(ldm_unet_xl: nn.Module, layout: str) -> None:
    stored = build_state_dict("sdxl", seed=23, layout=layout)
    original = dict(to_original_layout(stored))
    spec = detect_spec(stored)
    assert (spec.family, spec.base, spec.motion_norm) == ("sdxl", "sdxl", "video")
    adapter_sd = stored if layout == "diffusers" else original_to_diffusers(original)
    model = diffusers_motion_unet(diffusers_unet2d(ldm_unet_xl, "sdxl"), adapter_sd, mid=False, per_frame=False)
    x, _, _ = _inputs()
    a, b = ours(ldm_unet_xl, original, x), theirs(model, x)
    diff = (a - b).abs().max().item()
    control = (ours(ldm_unet_xl, original, x, per_frame=True) - b).abs().max().item()
    print(f"parity sdxl/{layout}: max abs diff {diff:.3g} (output mean abs {a.abs().mean():.3g}); "
          f"per-frame control {control:.3g}")
    assert diff <= TOL
    # Negative control: the per-frame norm (what this engine did before) must fail the same tolerance.
    assert control > 100 * TOL
