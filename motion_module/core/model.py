"""The temporal motion modules, in the original AnimateDiff parameter layout.

A motion module is a stack of "temporal transformers". Each one takes the UNet feature map of a batch of
videos laid out frame-major inside each video, ``x: (B*F, C, H, W)`` with ``F = num_frames`` consecutive rows
per video, and lets every spatial position attend across the frames of its own video:

    GroupNorm (per frame, or per video) -> proj_in -> [LayerNorm -> +PE -> temporal self-attention] x2
                          -> LayerNorm -> GEGLU feed-forward -> proj_out -> + x

Parameter names follow the original checkpoints exactly, e.g.
``down_blocks.0.motion_modules.1.temporal_transformer.transformer_blocks.0.attention_blocks.0.to_q.weight``,
so a state dict in that layout loads with ``load_state_dict(strict=True)``.

The entry GroupNorm pools per frame for most families and per video (statistics over the ``F`` frames of
each video, i.e. of the context window) for AnimateDiff-SDXL: ``MotionModuleSpec.motion_norm``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from motion_module.core.positional import sinusoidal_table
from motion_module.core.weights import compute_weight
from motion_module.errors import TooManyFramesError
from motion_module.files.spec import MotionModuleSpec

ATTENTION_HEADS = 8
NORM_GROUPS = 32


class PositionalEncoding(nn.Module):
    """Adds ``pe[:, :F]`` to a ``(N, F, C)`` sequence. ``pe`` is a buffer of shape ``(1, max_len, C)``."""

    pe: Tensor

    def __init__(self, dim: int, max_len: int) -> None:
        super().__init__()
        self.register_buffer("pe", sinusoidal_table(max_len, dim))

    def forward(self, x: Tensor) -> Tensor:
        frames = x.shape[1]
        if frames > self.pe.shape[1]:
            raise TooManyFramesError(
                f"{frames} frames in one motion-module call, but this module's positional table holds "
                f"{self.pe.shape[1]}; lower the context length to {self.pe.shape[1]} or less"
            )
        return x + self.pe[:, :frames].to(dtype=x.dtype)


class TemporalSelfAttention(nn.Module):
    """Multi-head self-attention along the frame axis of a ``(N, F, C)`` sequence, with positional encoding."""

    def __init__(self, dim: int, max_len: int, heads: int = ATTENTION_HEADS) -> None:
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(dim, dim, bias=False)
        self.to_v = nn.Linear(dim, dim, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim), nn.Dropout(0.0)])
        self.pos_encoder = PositionalEncoding(dim, max_len)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pos_encoder(x)
        n, f, c = x.shape
        h = self.heads

        def split(t: Tensor) -> Tensor:
            return t.view(n, f, h, c // h).transpose(1, 2)

        # one GEMM for q, k and v (the weights are concatenated per call: C x 3C, negligible next to N x C x 3C)
        weight = torch.cat([compute_weight(w, x.dtype) for w in (self.to_q.weight, self.to_k.weight, self.to_v.weight)])
        q, k, v = F.linear(x, weight).split(c, dim=-1)
        out = F.scaled_dot_product_attention(split(q), split(k), split(v))
        out = out.transpose(1, 2).reshape(n, f, c)
        return self.to_out[0](out)


class GEGLU(nn.Module):
    """``a * gelu(b)`` where ``[a, b] = proj(x)``."""

    def __init__(self, dim: int, inner: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, inner * 2)

    def forward(self, x: Tensor) -> Tensor:
        a, gate = self.proj(x).chunk(2, dim=-1)
        return a * F.gelu(gate)


class FeedForward(nn.Module):
    """GEGLU feed-forward with 4x expansion; keys ``net.0.proj`` and ``net.2``."""

    def __init__(self, dim: int, mult: int = 4) -> None:
        super().__init__()
        self.net = nn.ModuleList([GEGLU(dim, dim * mult), nn.Dropout(0.0), nn.Linear(dim * mult, dim)])

    def forward(self, x: Tensor) -> Tensor:
        return self.net[2](self.net[0](x))


class TemporalTransformerBlock(nn.Module):
    """Pre-norm temporal self-attentions (two in motion modules, one in SparseCtrl's) and a pre-norm
    feed-forward, all residual."""

    def __init__(self, dim: int, max_len: int, attentions: int = 2) -> None:
        super().__init__()
        self.attention_blocks = nn.ModuleList([TemporalSelfAttention(dim, max_len) for _ in range(attentions)])
        self.norms = nn.ModuleList([nn.LayerNorm(dim) for _ in range(attentions)])
        self.ff = FeedForward(dim)
        self.ff_norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        for attention, norm in zip(self.attention_blocks, self.norms):
            x = attention(norm(x)) + x
        return self.ff(self.ff_norm(x)) + x


class TemporalTransformer(nn.Module):
    """One motion module's body: ``(B*F, C, H, W) -> (B*F, C, H, W)``.

    ``per_video``: the entry GroupNorm takes its statistics over all frames of each video (AnimateDiff-SDXL)
    instead of each frame alone. ``attentions``: temporal self-attentions per block (SparseCtrl: 1).
    """

    def __init__(self, dim: int, max_len: int, per_video: bool = False, attentions: int = 2) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(NORM_GROUPS, dim, eps=1e-6, affine=True)
        self.per_video = per_video
        self.proj_in = nn.Linear(dim, dim)
        self.transformer_blocks = nn.ModuleList([TemporalTransformerBlock(dim, max_len, attentions)])
        self.proj_out = nn.Linear(dim, dim)

    def forward(self, x: Tensor, num_frames: int) -> Tensor:
        rows, c, h, w = x.shape
        if num_frames < 1 or rows % num_frames:
            raise ValueError(f"{rows} rows cannot be split into videos of {num_frames} frames")
        videos = rows // num_frames
        # (B*F, C, H, W) -> (B*H*W, F, C): every spatial position of every video is one sequence.
        seq = self._normalise(x, videos).view(videos, num_frames, c, h * w).permute(0, 3, 1, 2)
        body = self._body(seq.reshape(videos * h * w, num_frames, c))
        # the residual add reads the permuted view directly: one pass, no separate copy back to (B*F, C, H, W)
        out = x.view(videos, num_frames, c, h, w) + body.view(videos, h, w, num_frames, c).permute(0, 3, 4, 1, 2)
        return out.view(rows, c, h, w)

    def windowed(self, x: Tensor, groups: list[tuple[int, Tensor, Tensor]], budget: int | None = None) -> Tensor:
        """Motion-module windows: ``x + sum_w weight_w * body(window w)`` for ``x: (rows, C, H, W)``.

        ``groups``: per window length, ``(length, rows, weights)``: the rows of ``x`` forming its windows
        (``length`` consecutive entries per window) and one fusion weight per entry (the weights of a row
        sum to 1 over its windows). Only ``x``, the output and (per-frame norm) one normalised copy are
        full size; the layers see at most ``budget`` tokens at once over all windows of a position chunk.
        """
        rows, c, h, w = x.shape
        positions = h * w
        out = x.clone().view(rows, c, positions)
        normed = None if self.per_video else self.norm(x).view(rows, c, positions)  # per frame: any window
        # per video (AnimateDiff-SDXL): the statistics are those of each window, as in a whole-UNet call
        sources = [normed if normed is not None else
                   self._normalise(x.index_select(0, index), index.numel() // length).view(-1, c, positions)
                   for length, index, _ in groups]
        tokens = sum(index.numel() for _, index, _ in groups)
        step = positions if budget is None else max(1, budget // tokens)
        for start in range(0, positions, step):
            stop = min(start + step, positions)
            for (length, index, weights), source in zip(groups, sources):
                part = (source.index_select(0, index) if normed is not None else source)[:, :, start:stop]
                windows = index.numel() // length
                seq = part.reshape(windows, length, c, stop - start).permute(0, 3, 1, 2)
                body = self._body(seq.reshape(-1, length, c)).view(windows, stop - start, length, c)
                body = body.permute(0, 2, 3, 1).reshape(index.numel(), c, stop - start)
                out[:, :, start:stop].index_add_(0, index, body * weights.to(body.dtype).view(-1, 1, 1))
        return out.view(rows, c, h, w)

    def _body(self, seq: Tensor) -> Tensor:
        seq = self.proj_in(seq)
        for block in self.transformer_blocks:
            seq = block(seq)
        return self.proj_out(seq)

    def _normalise(self, x: Tensor, videos: int) -> Tensor:
        if not self.per_video:
            return self.norm(x)
        # GroupNorm of (B, C, F, H, W) == GroupNorm of (B, F, C, H*W) read group-wise over the F frames:
        # channels-first per video keeps each group's channels together across frames.
        rows, c, h, w = x.shape
        video = x.view(videos, rows // videos, c, h * w).transpose(1, 2)
        out = F.group_norm(video, self.norm.num_groups, self.norm.weight, self.norm.bias, self.norm.eps)
        return out.transpose(1, 2).reshape(rows, c, h, w)


class TemporalModule(nn.Module):
    """The unit inserted into the UNet; ``forward(x, num_frames)`` with x of shape ``(B*F, C, H, W)``."""

    def __init__(self, dim: int, max_len: int, per_video: bool = False, attentions: int = 2) -> None:
        super().__init__()
        self.temporal_transformer = TemporalTransformer(dim, max_len, per_video, attentions)

    def forward(self, x: Tensor, num_frames: int) -> Tensor:
        return self.temporal_transformer(x, num_frames)


class MotionBlock(nn.Module):
    """A UNet level's modules: ``motion_modules.<j>``."""

    def __init__(self, dim: int, count: int, max_len: int, per_video: bool = False) -> None:
        super().__init__()
        self.motion_modules = nn.ModuleList([TemporalModule(dim, max_len, per_video) for _ in range(count)])


class MotionModule(nn.Module):
    """All temporal modules of one checkpoint, laid out as ``down_blocks`` / ``mid_block`` / ``up_blocks``.

    ``down_blocks[i]`` holds 2 modules at level ``i`` (channels ``spec.channels[i]``), ``up_blocks[i]`` holds
    3 modules at level ``len(channels) - 1 - i``, ``mid_block`` (V2-type only) holds 1 at the deepest level.
    """

    def __init__(self, spec: MotionModuleSpec) -> None:
        super().__init__()
        self.spec = spec
        pe_len, video = spec.max_frames, spec.motion_norm == "video"
        self.down_blocks = nn.ModuleList([MotionBlock(c, 2, pe_len, video) for c in spec.channels])
        self.mid_block = MotionBlock(spec.channels[-1], 1, pe_len, video) if spec.mid_block else None
        self.up_blocks = nn.ModuleList([MotionBlock(c, 3, pe_len, video) for c in reversed(spec.channels)])

    def down(self, level: int, index: int) -> TemporalModule:
        return self.down_blocks[level].motion_modules[index]  # type: ignore[index, return-value]

    def up(self, block: int, index: int) -> TemporalModule:
        return self.up_blocks[block].motion_modules[index]  # type: ignore[index, return-value]

    def mid(self) -> TemporalModule | None:
        return None if self.mid_block is None else self.mid_block.motion_modules[0]  # type: ignore[return-value]

    def forward(self, *args: object, **kwargs: object) -> None:  # pragma: no cover - container only
        raise TypeError("MotionModule is a container; its TemporalModules run inside the UNet")
