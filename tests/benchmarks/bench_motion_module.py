"""Benchmark: one motion module's forward, ours vs diffusers' AnimateDiffTransformer3D, same weights.

SD1.5 widths at 512x512 (320 @ 64x64, 640 @ 32x32, 1280 @ 16x16 latents), 16 frames, one video.
Prints ms per call and the ratio ours/diffusers (goal <= 1.0 in fp32 on CPU; <= 0.9 in fp16 on a GPU,
with peak memory). Random weights: speed and memory do not depend on their values.

    python3 tests/benchmarks/bench_motion_module.py [--device cuda] [--dtype fp16] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from motion_module.core.model import MotionModule
from motion_module.files.convert import original_to_diffusers
from motion_module.files.spec import MotionModuleSpec

LEVELS = ((0, 320, 64), (1, 640, 32), (2, 1280, 16))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _once(fn: Callable[[], object], device: torch.device) -> tuple[float, float]:
    """(ms, peak MiB above the starting allocation; 0 on CPU) of one call."""
    base = 0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    ms = (time.perf_counter() - start) * 1000
    peak = (torch.cuda.max_memory_allocated(device) - base) / 2**20 if device.type == "cuda" else 0.0
    return ms, peak


def _interleaved(a: Callable[[], object], b: Callable[[], object], device: torch.device,
                 repeat: int) -> tuple[tuple[float, float], tuple[float, float]]:
    """Median (ms, peak MiB) of a and of b, run alternately so machine load hits both alike."""
    a(), b()
    runs_a, runs_b = [], []
    for _ in range(repeat):
        runs_a.append(_once(a, device))
        runs_b.append(_once(b, device))
    return ((statistics.median(r[0] for r in runs_a), max(r[1] for r in runs_a)),
            (statistics.median(r[0] for r in runs_b), max(r[1] for r in runs_b)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=("fp32", "fp16"), default=None)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    device = torch.device(args.device)
    dtype = {"fp32": torch.float32, "fp16": torch.float16}[args.dtype or ("fp16" if device.type == "cuda" else "fp32")]

    from diffusers import MotionAdapter

    spec = MotionModuleSpec("v2", "sd15", (320, 640, 1280, 1280), 32, True)
    ours = MotionModule(spec)
    adapter = MotionAdapter(block_out_channels=spec.channels, motion_layers_per_block=2, use_motion_mid_block=True,
                            motion_max_seq_length=32)
    missing, unexpected = adapter.load_state_dict(original_to_diffusers(ours.state_dict()), strict=False)
    assert not unexpected and all(k.endswith("pe") for k in missing), (missing, unexpected)
    ours.to(device, dtype).eval()
    adapter.to(device, dtype).eval()
    print(f"device={device} dtype={dtype} frames={args.frames} torch={torch.__version__}")
    print(f"{'width':>6} {'latent':>7} {'ours ms':>9} {'diffusers ms':>13} {'ratio':>6} "
          f"{'ours MiB':>9} {'diff MiB':>9}")
    for level, width, size in LEVELS:
        x = torch.randn(args.frames, width, size, size, device=device, dtype=dtype)
        mine = ours.down(level, 0)
        theirs = adapter.down_blocks[level].motion_modules[0]
        with torch.no_grad():
            a = mine(x, args.frames)
            b = theirs(x, num_frames=args.frames)
            assert a.shape == b.shape
            (t_ours, m_ours), (t_dif, m_dif) = _interleaved(
                lambda m=mine, x=x: m(x, args.frames), lambda t=theirs, x=x: t(x, num_frames=args.frames),
                device, args.repeat)
        print(f"{width:>6} {size:>4}x{size:<2} {t_ours:>9.1f} {t_dif:>13.1f} {t_ours / t_dif:>6.2f} "
              f"{m_ours:>9.1f} {m_dif:>9.1f}")


if __name__ == "__main__":
    main()
