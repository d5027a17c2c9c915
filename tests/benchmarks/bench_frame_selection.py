"""Peak memory of decoding a frame selection from a long video (python -m tests.benchmarks.bench_frame_selection).

Makes a 2,000-frame 512x512 H.264 source (ffmpeg's testsrc2, 25 fps; 1.5 GiB as RGB frames), then runs
``frame_selection.read_selected_frames`` on it for a few selections, each in a fresh interpreter, and reports:
the Python process's peak resident memory (VmHWM) before and after the decode, the peak of the ffmpeg
processes it started (sampled from /proc every 10 ms), the frames written and the time taken. Decoding streams
one frame at a time to PNG files, so the peaks should not depend on how many frames are decoded or kept.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from fractions import Fraction
from pathlib import Path

CASES = {
    "every 2nd after 100": {"skip_first_frames": 100, "select_every_nth": 2},
    "all but the first": {"skip_first_frames": 1},
    "force_rate 12, cap 500": {"force_rate": "12", "frame_load_cap": 500},
    "force_rate 60, every 2nd (repeats)": {"force_rate": "60", "skip_first_frames": 100, "select_every_nth": 2},
}


def peak_kib(pid: str = "self") -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            return int(next(line for line in status if line.startswith("VmHWM:")).split()[1])
    except (OSError, StopIteration):
        return 0


def children() -> list[str]:
    found: list[str] = []
    for task in Path("/proc/self/task").iterdir():
        try:
            found += (task / "children").read_text().split()
        except OSError:
            pass
    return found


def run_case(video: Path, options: dict[str, object]) -> dict[str, object]:
    from motion_module.video.frame_selection import FrameSelection, read_selected_frames

    chosen = {k: Fraction(str(v)) if k == "force_rate" else v for k, v in options.items()}
    child_peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal child_peak
        while not done.is_set():
            for pid in children():
                child_peak = max(child_peak, peak_kib(pid))
            time.sleep(0.01)

    with tempfile.TemporaryDirectory() as tmp:
        read_selected_frames(video, Path(tmp) / "warm", FrameSelection(frame_load_cap=1))  # imports, first frame
        before = peak_kib()
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        start = time.perf_counter()
        frames = read_selected_frames(video, Path(tmp) / "out", FrameSelection(**chosen))  # type: ignore[arg-type]
        seconds = time.perf_counter() - start
        done.set()
        sampler.join()
        on_disk = sum({p.stat().st_ino: p.stat().st_size for p in frames.paths}.values()) / 2**20  # links once
    return {"frames kept": len(frames), "python peak before MiB": round(before / 1024, 1),
            "python peak after MiB": round(peak_kib() / 1024, 1), "ffmpeg peak MiB": round(child_peak / 1024, 1),
            "PNG MiB on disk": round(on_disk, 1), "seconds": round(seconds, 1)}


def make_source(path: Path, frames: int, size: int) -> None:
    from motion_module.video.metadata import ffmpeg_exe

    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    f"testsrc2=s={size}x{size}:r=25", "-frames:v", str(frames), "-c:v", "libx264", "-preset",
                    "ultrafast", "-pix_fmt", "yuv420p", str(path)], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=2000)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: one case in this interpreter
    parser.add_argument("--video", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(Path(args.video), CASES[args.case])))
        return
    with tempfile.TemporaryDirectory() as tmp:
        video = Path(tmp) / "source.mp4"
        make_source(video, args.frames, args.size)
        raw = args.frames * args.size * args.size * 3 / 2**20
        print(f"source: {args.frames} frames of {args.size}x{args.size} ({raw:.0f} MiB as RGB), "
              f"{video.stat().st_size / 2**20:.1f} MiB H.264")
        for name in CASES:
            out = subprocess.run([sys.executable, "-m", "tests.benchmarks.bench_frame_selection", "--case", name,
                                  "--video", str(video)], capture_output=True, text=True, check=True)
            print(f"{name}: {out.stdout.strip()}")


if __name__ == "__main__":
    main()
