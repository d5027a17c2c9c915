"""End to end: Euler sampling with prompt travel and context windows on a tiny ldm UNet with motion modules.

The pieces are the real ones (``ldm`` UNet, ``patch.injected``, ``schedules``, ``prompts``, ``sampling``);
only the text encoder is replaced by fixed random keyframe embeddings.
"""

from __future__ import annotations

import torch

from motion_module.core.injection import injected
from motion_module.core.model import MotionModule
from motion_module.core.prompts import interpolate_conds, parse_prompt_travel, stack_conds
from motion_module.core.sampling import windowed_denoise
from motion_module.core.schedules import alphas_cumprod, context_windows
from motion_module.files.spec import MotionModuleSpec
from tests.fixtures.unets import CONTEXT_DIM, randomize

SD15 = (32, 64, 128, 128)
TOKENS = 7
CFG = 3.0


def motion_module(seed: int) -> MotionModule:
    return randomize(MotionModule(MotionModuleSpec("v2", "sd15", SD15, 32, True)), seed).eval()


class CompVisEps:
    """k-diffusion style wrapper of an eps UNet: ``(x, sigma, cond) -> denoised x0``."""

    def __init__(self, unet: torch.nn.Module) -> None:
        self.unet = unet
        self.sigmas = ((1 - alphas_cumprod("linear")) / alphas_cumprod("linear")).sqrt().float()

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        return (self.sigmas.view(1, -1) - sigma.view(-1, 1)).abs().argmin(dim=1).float()

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, cond: dict) -> torch.Tensor:
        scale = (sigma**2 + 1).rsqrt().view(-1, 1, 1, 1)
        eps = self.unet(x * scale, self.timestep(sigma), cond["c_crossattn"][0])
        return x - eps * sigma.view(-1, 1, 1, 1)


def travel_conds(frames: int) -> dict:
    """SD1 cond dict for [cond frames; uncond frames]: prompt travel between two keyframes."""
    travel = parse_prompt_travel(f"best quality\n0: a cat\n{frames // 2}: a dog", frames)
    assert travel is not None
    gen = torch.Generator().manual_seed(7)
    keys = {f: torch.randn(TOKENS, CONTEXT_DIM, generator=gen) for f in travel.keyframes}
    cond = stack_conds(interpolate_conds(keys, frames))
    uncond = torch.randn(TOKENS, CONTEXT_DIM, generator=gen).expand(frames, -1, -1)
    return {"c_crossattn": [torch.cat([cond, uncond])]}


def sample(unet: torch.nn.Module, mm: MotionModule, frames: int, *, windowed: bool,
           steps: int = 2, context: int = 16) -> torch.Tensor:
    denoiser = CompVisEps(unet)
    sigmas = torch.linspace(float(denoiser.sigmas[-1]), float(denoiser.sigmas[0]), steps)
    sigmas = torch.cat([sigmas.flip(0), torch.zeros(1)])
    x = torch.randn(frames, 4, 8, 8, generator=torch.Generator().manual_seed(3)) * sigmas[0]
    cond = travel_conds(frames)
    with injected(unet, mm, min(frames, context)) as handle, torch.no_grad():
        for step in range(steps):
            rows = torch.cat([x, x])
            sigma = sigmas[step].expand(rows.shape[0])
            if windowed:
                windows = context_windows(frames, context, 1, 4, "N", step)
                out = windowed_denoise(denoiser, rows, sigma, cond, num_frames=frames,
                                       windows=windows, set_window=handle.set_window)
            else:
                handle.window = frames
                out = denoiser(rows, sigma, cond)
            denoised = out[frames:] + CFG * (out[:frames] - out[frames:])
            x = x + (x - denoised) / sigmas[step] * (sigmas[step + 1] - sigmas[step])
    return x


def test_24_frames_with_windows_and_prompt_travel(unet: torch.nn.Module) -> None:
    first = sample(unet, motion_module(1), 24, windowed=True)
    assert first.shape == (24, 4, 8, 8)
    assert torch.isfinite(first).all()
    other = sample(unet, motion_module(2), 24, windowed=True)
    assert (first - other).abs().max() > 1e-3  # the motion module shapes the result


def test_short_video_windows_on_equals_off(unet: torch.nn.Module) -> None:
    mm = motion_module(1)
    on = sample(unet, mm, 12, windowed=True)
    off = sample(unet, mm, 12, windowed=False)
    assert torch.equal(on, off)
