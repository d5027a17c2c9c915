"""FreeNoise noise rescheduling for long videos (Qiu et al. 2023, "FreeNoise: Tuning-Free Longer Video
Diffusion via Noise Rescheduling"): the initial noise of frames past the first context window repeats the
noise of earlier frames in a locally shuffled order, so every window starts from similar noise statistics
and long videos stay consistent (fewer jumps at window borders).

Layout: A1111 keeps a video as a batch of frames, ``(frames, C, H, W)`` (optionally ``(..., frames, C, H, W)``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from motion_module.core.freeinit import NoiseSource
from motion_module.errors import ParameterError


def freenoise_noise(noise: torch.Tensor, context: int, overlap: int, seed: int) -> torch.Tensor:
    """``noise`` with frames ``context, context + s, ...`` (``s = context - overlap``) rescheduled.

    Frames ``0..context-1`` keep their noise. Each later block of ``s`` frames starting at frame ``i``
    takes the noise of frames ``i - context .. i - context + s - 1`` (already rescheduled, so it is the
    first window's noise all along), in an order shuffled by a CPU generator seeded with ``seed``; a last,
    shorter block takes the first frames of that shuffle. A video no longer than ``context`` is returned
    unchanged (the same tensor). The result is a new tensor in ``noise``'s dtype and device.
    """
    frames = noise.shape[-4] if noise.dim() >= 4 else 0
    if noise.dim() < 4 or not 1 <= context or not 0 <= overlap < context:
        raise ParameterError("freenoise", f"needs noise (..., frames, C, H, W), context >= 1 and 0 <= overlap < "
                             f"context; got shape {tuple(noise.shape)}, context {context}, overlap {overlap}")
    if frames <= context:
        return noise
    stride = context - overlap
    out = noise.clone()
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    for start in range(context, frames, stride):
        source = torch.arange(start - context, start - context + stride)
        order = source[torch.randperm(stride, generator=generator)][:frames - start]
        out[..., start:start + len(order), :, :, :] = out[..., order.to(noise.device), :, :, :]
    return out


def rescheduler(context: int, overlap: int, seed: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """``freenoise_noise`` with fixed settings, for a noise source's first draw."""
    return lambda noise: freenoise_noise(noise, context, overlap, seed)


def noise_source(rng: Any, context: int, overlap: int, seed: int) -> NoiseSource:
    """A stand-in for the host's generator ``rng`` whose first draw (the initial noise) is rescheduled."""
    return NoiseSource(rng, transform=rescheduler(context, overlap, seed))


__all__ = ["freenoise_noise", "noise_source", "rescheduler"]
