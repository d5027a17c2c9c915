"""RIFE frame interpolation speed: frames made per second at 512x512 with the full-size v4.25/4.26 network.

Run: ``python3 tests/benchmarks/bench_interpolation.py [--device cpu|cuda] [--size 512] [--frames 4] [--x 2]
[--batch 4] [--half]``. Random weights of the real shape (IFNetConfig's default, Practical-RIFE 4.25/4.26):
the speed does not depend on the values. The clip goes through ``interpolation.rife_frames`` as in a request
(8-bit frames in, batches moved to the device, frames out), after one warm-up batch.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from motion_module.video.interpolation import rife_frames  # noqa: E402
from motion_module.video.rife import IFNet  # noqa: E402


def clip(n: int, size: int) -> list[Image.Image]:
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    return [Image.fromarray(np.stack([128 + 100 * np.sin(6.28 * (x + i / n)), 128 + 100 * np.cos(6.28 * (y - i / n)),
                                      np.full_like(x, 40 + 20 * i)], -1).astype(np.uint8)) for i in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--frames", type=int, default=4, help="input frames (N); N*(X-1) frames are made, open clip")
    parser.add_argument("--x", type=int, default=2, help="interp_x")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = IFNet().eval().requires_grad_(False)
    frames = clip(args.frames, args.size)
    rife_frames(frames[:2], 2, False, net, device=args.device, batch=1)  # warm-up (kernels, allocator)
    if torch.device(args.device).type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    out = rife_frames(frames, args.x, False, net, device=args.device, batch=args.batch)
    seconds = time.perf_counter() - start
    made = (args.frames - 1) * (args.x - 1)
    peak = f", peak {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB" \
        if torch.device(args.device).type == "cuda" else ""
    print(f"RIFE IFNet v4.25-shaped, {args.size}x{args.size}, {args.device}, batch {args.batch}, "
          f"{torch.get_num_threads()} CPU threads: {made} frames made in {seconds:.2f} s = {made / seconds:.2f} "
          f"frames/s ({len(out)} frames out){peak}")


if __name__ == "__main__":
    main()
