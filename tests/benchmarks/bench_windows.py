"""Context-window efficiency: UNet frame-evaluations per output frame per step (perf.md goal G4).

Run: ``python tests/benchmarks/bench_windows.py``. For context 16 / overlap 4 / stride 1 it prints, per
video length and closed-loop mode, the mean and max over 25 steps, next to the whole-UNet minimum
``ceil((L - O) / (C - O)) * C / L``. The reference's N mode reaches 1.92 at L = 32 (perf.md §G4).
Also times ``windowed_denoise`` one window per call vs batched windows on a cheap stand-in denoiser
(overhead of slicing and fusion only).
"""

from __future__ import annotations

import math
import time

import torch

from motion_module.core.sampling import windowed_denoise
from motion_module.core.schedules import CLOSED_LOOP_MODES, context_windows, evaluations_per_frame

CONTEXT, OVERLAP, STEPS = 16, 4, 25


def efficiency_table() -> None:
    print(f"context {CONTEXT}, overlap {OVERLAP}, stride 1, {STEPS} steps: mean / max evaluations per frame")
    print("frames  minimum  " + "  ".join(f"{m:>11}" for m in CLOSED_LOOP_MODES))
    for frames in (24, 32, 48, 64, 128):
        minimum = math.ceil((frames - OVERLAP) / (CONTEXT - OVERLAP)) * CONTEXT / frames
        cells = []
        for mode in CLOSED_LOOP_MODES:
            figures = [evaluations_per_frame(context_windows(frames, CONTEXT, 1, OVERLAP, mode, n), frames)
                       for n in range(STEPS)]
            cells.append(f"{sum(figures) / STEPS:5.3f}/{max(figures):5.3f}")
        print(f"{frames:6d}  {minimum:7.3f}  " + "  ".join(f"{c:>11}" for c in cells))


def overhead() -> None:
    frames, groups = 64, 2
    x = torch.randn(groups * frames, 4, 64, 64)
    cond = {"c_crossattn": [torch.randn(groups * frames, 77, 768)]}
    windows = context_windows(frames, CONTEXT, 2, OVERLAP, "R-P", 3)

    def denoiser(a: torch.Tensor, s: object, c: object) -> torch.Tensor:
        return a * 0.5

    for label, max_rows in (("one window per call", None), ("batched (4 windows)", 4 * CONTEXT * groups)):
        start = time.perf_counter()
        for _ in range(5):
            windowed_denoise(denoiser, x, 1.0, cond, num_frames=frames, windows=windows, max_rows=max_rows)
        per_call = (time.perf_counter() - start) / 5
        print(f"{label:22s} {per_call * 1e3:7.1f} ms per step ({len(windows)} windows, 64x64 latents)")


if __name__ == "__main__":
    efficiency_table()
    overhead()
