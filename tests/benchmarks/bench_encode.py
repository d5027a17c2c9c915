"""Encode 64 frames of 512x512 into every output format; print seconds and sizes per format.

Run: ``python3 tests/benchmarks/bench_encode.py [--frames 64] [--size 512] [--repeat 1]``.
Baselines (what the reference extension does) are timed too and printed as ratios:
GIF: one Pillow save with a constant int(1000/fps) ms duration; MP4: imageio's ffmpeg writer
with its defaults (libx264, yuv420p, no metadata, no faststart).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from motion_module.video.files import EncodeOptions, SavedVideo, save_video

INFOTEXT = 'a fox running, "golden hour"\nNegative prompt: blurry\nSteps: 20, Seed: 1, Größe: 猫'


def make_frames(n: int, size: int) -> list[Image.Image]:
    """A drifting gradient with a moving disc and mild noise: (size, size, 3) uint8 frames."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    frames = []
    for i in range(n):
        t = i / n
        r = 128 + 100 * np.sin(2 * np.pi * (x + t))
        g = 128 + 100 * np.cos(2 * np.pi * (y - t))
        b = 128 + 60 * np.sin(2 * np.pi * (x + y + 2 * t))
        disc = (x - 0.5 - 0.3 * np.cos(2 * np.pi * t)) ** 2 + (y - 0.5) ** 2 < 0.01
        rgb = np.stack([r, g, b], axis=-1)
        rgb[disc] = (240, 230, 40)
        rgb += rng.normal(0, 3, rgb.shape)
        frames.append(Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)))
    return frames


def timed(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    frames = make_frames(args.frames, args.size)
    out = Path(tempfile.mkdtemp(prefix="bench-encode-"))
    rows: list[tuple[str, float, int, str]] = []
    cases = [("GIF", {}), ("GIF", {"gif_palette": True}), ("MP4", {}), ("WEBM", {}),
             ("WEBP", {}), ("WEBP", {"webp_lossless": True}), ("PNG", {}), ("TXT", {})]
    if shutil.which("gifsicle"):
        cases.insert(2, ("GIF", {"gif_gifsicle": True}))
    try:
        for fmt, extra in cases:
            opts = EncodeOptions(fps=8, **extra)
            result: dict[str, SavedVideo] = {}

            def run(fmt: str = fmt, opts: EncodeOptions = opts,
                    result: dict[str, SavedVideo] = result) -> None:
                result["v"] = save_video(frames, out, seed=1, formats=[fmt], infotext=INFOTEXT,
                                         options=opts)

            seconds = timed(run, args.repeat)
            path = result["v"].files[fmt]
            files = list(path.iterdir()) if path.is_dir() else [path]
            size = sum(p.stat().st_size for p in files)
            label = fmt + "".join(f" {k}" for k in extra)
            rows.append((label, seconds, size, ""))
        baseline_gif = timed(lambda: frames[0].save(out / "base.gif", save_all=True,
                                                    append_images=frames[1:], duration=125, loop=0),
                             args.repeat)
        import imageio.v2 as iio

        def base_mp4() -> None:
            iio.mimwrite(out / "base.mp4", [np.asarray(f) for f in frames], fps=8,
                         macro_block_size=1)

        baseline_mp4 = timed(base_mp4, args.repeat)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    print(f"{args.frames} frames of {args.size}x{args.size}, best of {args.repeat}")
    print(f"{'format':<22}{'seconds':>9}{'size (KiB)':>12}{'vs baseline':>13}")
    for label, seconds, size, _ in rows:
        base = baseline_gif if label == "GIF" else baseline_mp4 if label == "MP4" else None
        ratio = f"{seconds / base:>12.2f}x" if base else ""
        print(f"{label:<22}{seconds:>9.2f}{size / 1024:>12.1f}{ratio}")
    print(f"{'baseline GIF (Pillow)':<22}{baseline_gif:>9.2f}")
    print(f"{'baseline MP4 (imageio)':<22}{baseline_mp4:>9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
