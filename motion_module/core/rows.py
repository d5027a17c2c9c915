"""The rows of a batch's nested values: latents, sigmas and conditioning dicts/lists alike.

Shared by the windowed denoiser (a window's rows of the sampler's arguments) and the injection (a chunk's
rows of a spatial layer's arguments).
"""

from __future__ import annotations

from typing import Any

import torch


def slice_rows(value: Any, rows: int, index: torch.Tensor | slice) -> Any:
    """Select ``index`` rows of every tensor in ``value`` whose first dim equals ``rows`` (a ``slice``:
    views, no copies).

    ``value`` may be a tensor, a list/tuple of them (SD1 ``c_crossattn: [Tensor]``), a dict of
    either (SD1/SDXL cond dicts), or anything else (returned unchanged, as are tensors whose first
    dim differs, 0-d tensors and Python scalars).
    """
    if isinstance(value, torch.Tensor):
        if value.dim() >= 1 and value.shape[0] == rows:
            return value[index] if isinstance(index, slice) else value.index_select(0, index.to(value.device))
        return value
    if isinstance(value, dict):
        return {key: slice_rows(item, rows, index) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(slice_rows(item, rows, index) for item in value)
    return value


__all__ = ["slice_rows"]
