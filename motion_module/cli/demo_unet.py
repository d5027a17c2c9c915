"""A tiny random UNet with ldm's block layout, so the real injection code runs on it (demo only).

A stand-in for the ``UNetModel`` of Stability-AI's ``ldm``, which the engine must not import:
the same ``input_blocks`` / ``middle_block`` / ``output_blocks`` ModuleLists of
``TimestepEmbedSequential``, with classes named exactly ``ResBlock`` (``.out_channels``),
``SpatialTransformer``, ``Downsample``, ``Upsample`` and ``GroupNorm32``, because
``injection.py`` recognises blocks by class name. SD1.5-shaped: model_channels 32, channel_mult
(1, 2, 4, 4), 2 ResBlocks per level, attention at the first 3 levels -> 12 / 1 / 12 blocks. The
layers inside a block are simplified (one cross-attention per SpatialTransformer) and the weights
are random. The tests run the engine on Stability-AI's real ldm UNet.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MODEL_CHANNELS = 32
CHANNEL_MULT = (1, 2, 4, 4)
ATTENTION_LEVELS = (0, 1, 2)
CONTEXT_DIM = 32
HEADS = 4


class GroupNorm32(nn.GroupNorm):
    """GroupNorm with 32 groups, computed in float32 (ldm's class of the same name)."""

    def __init__(self, channels: int) -> None:
        super().__init__(32, channels)

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.float()).type(x.dtype)


class TimestepBlock(nn.Module):
    """A layer that also takes the timestep embedding: ``forward(x, emb)``."""


class ResBlock(TimestepBlock):
    """``x (N, C_in, H, W), emb (N, E) -> (N, C_out, H, W)``: two 3x3 convs, residual."""

    def __init__(self, channels: int, emb_dim: int, out_channels: int) -> None:
        super().__init__()
        self.channels, self.out_channels = channels, out_channels
        self.in_layers = nn.Sequential(GroupNorm32(channels), nn.SiLU(),
                                       nn.Conv2d(channels, out_channels, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, out_channels))
        self.out_layers = nn.Sequential(GroupNorm32(out_channels), nn.SiLU(),
                                        nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip_connection = (nn.Identity() if channels == out_channels
                                else nn.Conv2d(channels, out_channels, 1))

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.in_layers(x) + self.emb_layers(emb)[:, :, None, None]
        return self.skip_connection(x) + self.out_layers(h)


class SpatialTransformer(nn.Module):
    """Minimal cross-attention block: ``x (N, C, H, W), context (N, T, D) -> (N, C, H, W)``."""

    def __init__(self, channels: int, context_dim: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(32, channels, eps=1e-6)  # a plain GroupNorm, as in ldm
        self.proj_in = nn.Conv2d(channels, channels, 1)
        self.to_q = nn.Linear(channels, channels, bias=False)
        self.to_k = nn.Linear(context_dim, channels, bias=False)
        self.to_v = nn.Linear(context_dim, channels, bias=False)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        n, c, h, w = x.shape
        seq = self.proj_in(self.norm(x)).flatten(2).transpose(1, 2)  # (N, H*W, C)

        def heads(t: Tensor) -> Tensor:  # (N, L, C) -> (N, heads, L, C / heads)
            return t.view(n, t.shape[1], HEADS, c // HEADS).transpose(1, 2)

        q, k, v = heads(self.to_q(seq)), heads(self.to_k(context)), heads(self.to_v(context))
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, h * w, c)
        return x + self.proj_out(out.transpose(1, 2).reshape(n, c, h, w))


class Downsample(nn.Module):
    """Stride-2 3x3 convolution: ``(N, C, H, W) -> (N, C, H/2, W/2)``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = self.out_channels = channels
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Nearest 2x, then a 3x3 convolution: ``(N, C, H, W) -> (N, C, 2H, 2W)``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = self.out_channels = channels
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class TimestepEmbedSequential(nn.Sequential):
    """Gives ``emb`` to TimestepBlocks, ``context`` to SpatialTransformers, only ``x`` to others."""

    def forward(self, x: Tensor, emb: Tensor, context: Tensor) -> Tensor:  # type: ignore[override]
        for layer in self:
            if isinstance(layer, TimestepBlock):
                x = layer(x, emb)
            elif isinstance(layer, SpatialTransformer):
                x = layer(x, context)
            else:
                x = layer(x)
        return x


def timestep_embedding(timesteps: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding ``(N,) -> (N, dim)``: cos, then sin of ``t * max_period^(-i/half)``."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
    args = timesteps.float()[:, None] * freqs[None].to(timesteps.device)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class UNetModel(nn.Module):
    """``(x (N, 4, H, W), timesteps (N,), context (N, T, 32)) -> eps (N, 4, H, W)``.

    H and W must be multiples of 8 (three Downsamples).
    """

    def __init__(self, in_channels: int = 4, model_channels: int = MODEL_CHANNELS,
                 channel_mult: tuple[int, ...] = CHANNEL_MULT, num_res_blocks: int = 2,
                 context_dim: int = CONTEXT_DIM) -> None:
        super().__init__()
        seq, emb_dim = TimestepEmbedSequential, 4 * model_channels
        self.model_channels = model_channels
        self.time_embed = nn.Sequential(nn.Linear(model_channels, emb_dim), nn.SiLU(),
                                        nn.Linear(emb_dim, emb_dim))
        ch = model_channels
        self.input_blocks = nn.ModuleList([seq(nn.Conv2d(in_channels, ch, 3, padding=1))])
        skips = [ch]
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers: list[nn.Module] = [ResBlock(ch, emb_dim, model_channels * mult)]
                ch = model_channels * mult
                if level in ATTENTION_LEVELS:
                    layers.append(SpatialTransformer(ch, context_dim))
                self.input_blocks.append(seq(*layers))
                skips.append(ch)
            if level != len(channel_mult) - 1:
                self.input_blocks.append(seq(Downsample(ch)))
                skips.append(ch)
        self.middle_block = seq(ResBlock(ch, emb_dim, ch), SpatialTransformer(ch, context_dim),
                                ResBlock(ch, emb_dim, ch))
        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(num_res_blocks + 1):
                layers = [ResBlock(ch + skips.pop(), emb_dim, model_channels * mult)]
                ch = model_channels * mult
                if level in ATTENTION_LEVELS:
                    layers.append(SpatialTransformer(ch, context_dim))
                if level and i == num_res_blocks:
                    layers.append(Upsample(ch))
                self.output_blocks.append(seq(*layers))
        self.out = nn.Sequential(GroupNorm32(ch), nn.SiLU(),
                                 nn.Conv2d(ch, in_channels, 3, padding=1))

    def forward(self, x: Tensor, timesteps: Tensor, context: Tensor) -> Tensor:
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels).to(x.dtype))
        hs, h = [], x
        for block in self.input_blocks:
            h = block(h, emb, context)
            hs.append(h)
        h = self.middle_block(h, emb, context)
        for block in self.output_blocks:
            h = block(torch.cat([h, hs.pop()], dim=1), emb, context)
        return self.out(h)


def randomize(module: nn.Module, seed: int, gain: float = 1.0) -> nn.Module:
    """Random weights from ``seed``: matrices ``N(0, gain^2 / fan_in)``, norm scales ~1, biases ~0.

    Keeps activations of the order of 1 through the residual stack (every ResBlock normalises
    its input), so outputs stay finite and moderate. Buffers (positional tables) are left alone.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            noise = torch.randn(param.shape, generator=gen, dtype=torch.float32)
            if param.dim() >= 2:
                noise *= gain / math.sqrt(math.prod(param.shape[1:]))
            elif name.endswith("weight"):
                noise = 1.0 + 0.1 * noise
            else:
                noise *= 0.05
            param.copy_(noise.to(param.dtype))
    return module


def toy_unet(seed: int = 0) -> UNetModel:
    """The demo's SD1.5-shaped UNet with random weights, in eval mode, without gradients."""
    unet = UNetModel()
    randomize(unet, seed)
    return unet.eval().requires_grad_(False)
