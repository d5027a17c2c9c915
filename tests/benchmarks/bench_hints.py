"""Host memory of ControlNet hints during V2V sampling: 256 frames of 512x512 (python -m tests.benchmarks.bench_hints).

ControlNet keeps an AnimateDiff batch's hints at control resolution on the CPU, one row per frame (two copies
when WebUI batches cond and uncond). `controlnet.HintSlicer` hands each UNet call only its window's rows, moved
to the device, and puts the full tensor back after every step. This measures the process's resident memory
(RSS, sampled from /proc) while 20 steps of windows run over the frames: what slicing adds beyond the hints
themselves should be about one window's rows, whatever the number of frames.
"""

from __future__ import annotations

import argparse
import gc
import resource
import time

import torch

from motion_module.control.controlnet import HintSlicer
from motion_module.core.schedules import context_windows


def rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


class Param:
    def __init__(self, hint: torch.Tensor) -> None:
        self.hint_cond, self.hr_hint_cond = hint, None


def measure(frames: int, size: int, context: int, steps: int, doubled: bool) -> dict[str, float]:
    hints = torch.rand(frames, 3, size, size)
    hint = torch.cat([hints, hints]) if doubled else hints
    del hints
    gc.collect()
    param = Param(hint)
    base = peak = rss_mib()
    start = time.perf_counter()
    calls = 0
    for step in range(steps):
        with HintSlicer([param], frames, device="cpu") as slicer:
            for window in context_windows(frames, context, 1, context // 4, "R-P", step):
                for _group in range(2):  # cond, then uncond: one call each
                    slicer.select(window)
                    _ = param.hint_cond.mean()  # the UNet call reads its rows
                    calls += 1
                    peak = max(peak, rss_mib())
        assert param.hint_cond is hint
    per_frame = 3 * size * size * 4 / 2**20
    return {"hints MiB": hint.numel() * 4 / 2**20, "rss before MiB": base, "extra peak MiB": peak - base,
            "one window MiB": context * per_frame, "calls": calls,
            "ms/call": 1000 * (time.perf_counter() - start) / calls}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--context", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    print(f"{'frames':>6} {'layout':>7} {'hints MiB':>10} {'extra peak MiB':>15} {'one window MiB':>15} {'ms/call':>8}")
    for frames in (64, 256):
        for doubled in (False, True):
            r = measure(frames, args.size, args.context, args.steps, doubled)
            print(f"{frames:>6} {'2N' if doubled else 'N':>7} {r['hints MiB']:>10.0f} {r['extra peak MiB']:>15.1f} "
                  f"{r['one window MiB']:>15.1f} {r['ms/call']:>8.2f}")


if __name__ == "__main__":
    main()
