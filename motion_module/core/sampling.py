"""Windowed denoising over any denoiser callable ``(x, sigma, cond) -> Tensor``.

Row layout
----------
A1111 hands the inner model a batch of ``rows = groups * num_frames`` latents stacked
group-major: ``[group 0 frames 0..L-1; group 1 frames 0..L-1; ...]`` (cond, uncond, further
AND-prompts...). The group count is derived from the row count and the known frame count, never
from WebUI settings. A window call keeps that layout: for window ``w`` it sends rows
``[g * L + f for g in groups for f in w]``, so every block of ``len(w)`` consecutive rows is one
video window, which is what the injected motion modules expect (``set_window(len(w))`` tells
them the block size before each call). Several windows may share one call: their row blocks are
concatenated, still one block per window and group.

Fusion
------
Overlapping outputs are averaged with per-position weights (:func:`schedules.fusion_weights`).
Weights are normalised per frame *before* accumulation, so a frame seen by one window gets its
output back exactly (weight 1.0), and batching windows does not change any arithmetic: outputs
are accumulated window by window in list order either way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from motion_module.core.injection import TemporalWindows
from motion_module.core.rows import slice_rows
from motion_module.core.schedules import evaluations_per_frame, fusion_weights
from motion_module.errors import ParameterError

__all__ = ["Denoiser", "windowed_denoise", "slice_rows", "window_rows", "evaluations_per_frame"]

Denoiser = Callable[[torch.Tensor, Any, Any], torch.Tensor]


def window_rows(window: Sequence[int], num_frames: int, groups: int) -> list[int]:
    """Group-major row indices of one window: ``[g * num_frames + f for g, f in ...]``."""
    return [group * num_frames + frame for group in range(groups) for frame in window]


def _check_windows(windows: Sequence[Sequence[int]], num_frames: int) -> None:
    if not windows:
        raise ParameterError("windows", "no context windows given; pass at least one window")
    covered: set[int] = set()
    for window in windows:
        if len(window) == 0:
            raise ParameterError("windows", "a context window is empty; every window needs frames")
        bad = [f for f in window if not 0 <= f < num_frames]
        if bad:
            raise ParameterError(
                "windows", f"frame indices {bad} are outside 0..{num_frames - 1}; rebuild the windows"
            )
        covered.update(window)
    if len(covered) != num_frames:
        missing = sorted(set(range(num_frames)) - covered)[:8]
        raise ParameterError("windows", f"frames {missing} are in no window; every frame must be covered")


def _normalised_weights(
    windows: Sequence[Sequence[int]], num_frames: int, fusion: str
) -> list[torch.Tensor]:
    """Per-window weight vectors (float64) divided by each frame's total weight."""
    total = torch.zeros(num_frames, dtype=torch.float64)
    raw = []
    for window in windows:
        weights = fusion_weights(len(window), fusion, dtype=torch.float64)
        total.index_add_(0, torch.tensor(list(window), dtype=torch.long), weights)
        raw.append(weights)
    return [w / total[list(window)] for w, window in zip(raw, windows)]


def temporal_windows(windows: Sequence[Sequence[int]], num_frames: int, fusion: str,
                     chunk: int | None = None) -> TemporalWindows:
    """The motion-module windows of one step: the same windows and fusion weights as whole-UNet windows;
    ``chunk``: rows per spatial-layer call (``injection.frame_chunks``), None for all at once."""
    _check_windows(windows, num_frames)
    return TemporalWindows(tuple(tuple(int(f) for f in w) for w in windows),
                           tuple(_normalised_weights(windows, num_frames, fusion)), chunk)


def _chunks(windows: Sequence[Sequence[int]], groups: int, max_rows: int | None) -> list[list[int]]:
    """Group consecutive windows of equal length into calls of at most ``max_rows`` rows."""
    chunks: list[list[int]] = []
    for position, window in enumerate(windows):
        rows = len(window) * groups
        if chunks:
            last = chunks[-1]
            same = len(windows[last[0]]) == len(window)
            fits = max_rows is not None and rows * (len(last) + 1) <= max_rows
            if same and fits:
                last.append(position)
                continue
        chunks.append([position])
    return chunks


def _accumulate(out: torch.Tensor, y: torch.Tensor, row_weights: Sequence[torch.Tensor],
                index_lists: Sequence[Sequence[int]]) -> None:
    """Add each window's block of ``y`` (rows in ``index_lists`` order) into ``out``, weighted per row."""
    offset = 0
    for per_row, part in zip(row_weights, index_lists):
        block = y[offset : offset + len(part)]
        scale = per_row.to(dtype=y.dtype, device=y.device).view(-1, *([1] * (y.dim() - 1)))
        out.index_add_(0, torch.tensor(list(part), dtype=torch.long, device=y.device), block * scale)
        offset += len(part)


def _before_call(set_window: Callable[[int], None] | None, on_frames: Callable[[list[int]], None] | None,
                 window: int, frame_of_row: list[int]) -> None:
    if set_window is not None:
        set_window(window)
    if on_frames is not None:
        on_frames(frame_of_row)


def windowed_denoise(
    denoiser: Denoiser,
    x: torch.Tensor,
    sigma: Any,
    cond: Any,
    *,
    num_frames: int,
    windows: Sequence[Sequence[int]],
    fusion: str = "pyramid",
    max_rows: int | None = None,
    set_window: Callable[[int], None] | None = None,
    on_frames: Callable[[list[int]], None] | None = None,
) -> torch.Tensor:
    """Denoise ``x`` window by window and fuse the overlapping outputs.

    Args:
        denoiser: ``(x, sigma, cond) -> Tensor`` returning x0 or eps with the shape of its x.
        x: latents ``(groups * num_frames, C, H, W)``, group-major (see module docstring).
        sigma: per-row tensor ``(rows,)`` (sliced), or a scalar / 0-d tensor (passed through).
        cond: SD1 dict ``{"c_crossattn": [Tensor(rows, T, D)], "c_concat": [Tensor(rows, C, H, W)]}``,
            SDXL dict ``{"crossattn": (rows, T, D), "vector": (rows, V), "c_concat": ...}``, a bare
            tensor, or anything else; tensors whose first dim is ``rows`` are sliced per window.
        num_frames: L, the video length.
        windows: frame-index windows (e.g. :func:`schedules.context_windows`), covering 0..L-1.
        fusion: ``"pyramid"`` or ``"flat"`` weights for overlapping frames.
        max_rows: row budget per denoiser call; consecutive equal-length windows are batched up
            to it (a window larger than the budget still runs, alone). ``None``: one window per call.
        set_window: called with the window length before every denoiser call.
        on_frames: called before every denoiser call with the video frame (0..L-1) of each row of that
            call, in row order (e.g. to hand ControlNet the hints of exactly those frames).

    Returns:
        Tensor ``(rows, ...)`` in the denoiser's output dtype. A single in-order window covering
        all frames calls the denoiser once on the unmodified inputs and returns its result as is.
    """
    frames = int(num_frames)
    rows = x.shape[0]
    if frames < 1 or rows % frames:
        raise ParameterError(
            "num_frames",
            f"the batch has {rows} rows, not a multiple of {frames} frames; pass the video length "
            "the batch was built with",
        )
    groups = rows // frames
    windows = [list(w) for w in windows]
    if len(windows) == 1 and windows[0] == list(range(frames)):
        _before_call(set_window, on_frames, frames, list(range(frames)) * groups)
        return denoiser(x, sigma, cond)
    _check_windows(windows, frames)
    weights = _normalised_weights(windows, frames, fusion)
    out: torch.Tensor | None = None
    for chunk in _chunks(windows, groups, max_rows):
        index_lists = [window_rows(windows[p], frames, groups) for p in chunk]
        index = torch.tensor([i for part in index_lists for i in part], dtype=torch.long)
        _before_call(set_window, on_frames, len(windows[chunk[0]]), [int(i) % frames for i in index.tolist()])
        y = denoiser(x.index_select(0, index.to(x.device)), slice_rows(sigma, rows, index),
                     slice_rows(cond, rows, index))
        if y.shape[0] != index.numel() or y.shape[1:] != x.shape[1:]:
            raise ParameterError(
                "denoiser",
                f"returned shape {tuple(y.shape)} for an input of {(index.numel(), *x.shape[1:])}; "
                "the denoiser must return one output per input row",
            )
        if out is None:
            out = torch.zeros((rows, *y.shape[1:]), dtype=y.dtype, device=y.device)
        _accumulate(out, y, [weights[p].repeat(groups) for p in chunk], index_lists)
    assert out is not None
    return out
