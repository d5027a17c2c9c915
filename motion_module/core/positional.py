"""The sinusoidal positional table of AnimateDiff's temporal attention (a leaf module: torch only)."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def sinusoidal_table(max_len: int, dim: int) -> Tensor:
    """The standard sin/cos positional table, shape ``(1, max_len, dim)``, float32.

    Row ``i`` depends only on ``i`` and ``dim``, never on ``max_len``. Always computed on the CPU, even under a
    ``torch.device(...)`` context (building a model on "meta" would otherwise run these ops through slow meta
    kernels; the table is a constant, not a weight).
    """
    position = torch.arange(max_len, dtype=torch.float32, device="cpu").unsqueeze(1)
    div_term = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32, device="cpu") * (-math.log(10000.0) / dim))
    table = torch.zeros(1, max_len, dim, device="cpu")
    table[0, :, 0::2] = torch.sin(position * div_term)
    table[0, :, 1::2] = torch.cos(position * div_term)
    return table


__all__ = ["sinusoidal_table"]
