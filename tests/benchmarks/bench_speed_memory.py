"""Speed and memory of one sampler step, as ratios (python -m tests.benchmarks.bench_speed_memory [--device cuda]).

Rows (random weights: speed and memory do not depend on their values; batch = cond + uncond, 2 videos):
  1. ours (ldm UNet + inserted motion modules) vs diffusers' UNetMotionModel, 16 frames, one window, and
     diffusers' own motion overhead (UNetMotionModel / its bare UNet2DConditionModel) to compare with row 2;
  2. ours vs the bare UNet (the motion modules' overhead), 16 frames;
  3. window_mode motion_module vs unet at 64 frames (context 16, overlap 4);
  4. peak memory per frame count (16/32/64[/128]) in both modes: CUDA's max allocated on a GPU; on the CPU
     the peak resident size of a fresh process per configuration (sampled every millisecond), minus the
     same process's resident size just before the step (weights and inputs already there).
Defaults are a reduced SD1.5 shape for the CPU (channels 64, 16x16 latents, fp32). On a GPU use the full size:
``--device cuda --dtype fp16 --channels 320 --size 64`` (512x512 images).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import threading
import time
from typing import Any

import torch

from motion_module.core.injection import injected
from motion_module.core.model import MotionModule
from motion_module.core.run import plan_run
from motion_module.files.spec import MotionModuleSpec
from motion_module.params.request import AnimateDiffParams


def ldm_unet(channels: int, context_dim: int = 768) -> torch.nn.Module:
    from ldm.modules.diffusionmodules.openaimodel import UNetModel

    return UNetModel(image_size=32, in_channels=4, out_channels=4, model_channels=channels, num_res_blocks=2,
                     attention_resolutions=[4, 2, 1], channel_mult=(1, 2, 4, 4), num_head_channels=channels // 8
                     if channels < 320 else 64, use_spatial_transformer=True, transformer_depth=1,
                     context_dim=context_dim, legacy=False)


def motion_module(channels: int) -> MotionModule:
    return MotionModule(MotionModuleSpec("v2", "sd15", (channels, 2 * channels, 4 * channels, 4 * channels), 32, True))


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn: Any, device: str, repeat: int) -> float:
    fn()
    _sync(device)
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return best * 1000


def step(unet: torch.nn.Module, mm: MotionModule | None, frames: int, mode: str, args: argparse.Namespace) -> Any:
    """A function running one sampler step (2 groups) of ``frames`` frames in ``mode``."""
    dtype = {"fp32": torch.float32, "fp16": torch.float16}[args.dtype]
    x = torch.randn(2 * frames, 4, args.size, args.size, device=args.device, dtype=dtype)
    t = torch.full((2 * frames,), 500.0, device=args.device)
    c = torch.randn(2 * frames, 77, 768, device=args.device, dtype=dtype)
    if mm is None:
        return lambda: unet(x, t, c)
    plan = plan_run(AnimateDiffParams(enable=True, video_length=frames, context=16, overlap=4, window_mode=mode),
                    mm.spec, "")

    def run() -> torch.Tensor:
        with injected(unet, mm, plan.context) as inj:
            return plan.denoise(lambda xs, ss, cs: unet(xs, ss, cs), x, t, c, step=0, frames=inj)
    return run


def diffusers_step(args: argparse.Namespace, frames: int, motion: bool = True) -> Any:
    """diffusers' UNetMotionModel (``motion``) or its bare UNet2DConditionModel, same sizes, random weights."""
    from diffusers import MotionAdapter, UNet2DConditionModel, UNetMotionModel

    ch = args.channels
    blocks = (ch, 2 * ch, 4 * ch, 4 * ch)
    unet2d = UNet2DConditionModel(block_out_channels=blocks, cross_attention_dim=768, attention_head_dim=8)
    adapter = MotionAdapter(motion_layers_per_block=2, block_out_channels=blocks, motion_max_seq_length=32,
                            motion_mid_block_layers_per_block=1, use_motion_mid_block=True)
    dtype = {"fp32": torch.float32, "fp16": torch.float16}[args.dtype]
    if not motion:
        bare = unet2d.to(args.device, dtype).eval()
        flat = torch.randn(2 * frames, 4, args.size, args.size, device=args.device, dtype=dtype)
        text = torch.randn(2 * frames, 77, 768, device=args.device, dtype=dtype)
        return lambda: bare(flat, 500, encoder_hidden_states=text)
    model = UNetMotionModel.from_unet2d(unet2d, adapter).to(args.device, dtype).eval()
    x = torch.randn(2, 4, frames, args.size, args.size, device=args.device, dtype=dtype)
    c = torch.randn(2 * frames, 77, 768, device=args.device, dtype=dtype)  # per-frame rows, as diffusers expects
    t = torch.full((2,), 500.0, device=args.device)
    return lambda: model(x, t, encoder_hidden_states=c)


def peak_of(mode: str, frames: int, args: argparse.Namespace) -> float:
    """Peak memory (MiB) of one step: CUDA max allocated, or a fresh process's resident-size growth."""
    if args.device.startswith("cuda"):
        unet, mm = build(args)
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        with torch.no_grad():
            step(unet, mm, frames, mode, args)()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    argv = [sys.executable, "-m", "tests.benchmarks.bench_speed_memory", "--peak", mode, str(frames),
            "--channels", str(args.channels), "--size", str(args.size), "--dtype", args.dtype]
    return float(json.loads(subprocess.run(argv, capture_output=True, text=True, check=True).stdout)["mib"])


def build(args: argparse.Namespace) -> tuple[torch.nn.Module, MotionModule]:
    dtype = {"fp32": torch.float32, "fp16": torch.float16}[args.dtype]
    return (ldm_unet(args.channels).to(args.device, dtype).eval(),
            motion_module(args.channels).to(args.device, dtype).eval())


def rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


def child_peak(args: argparse.Namespace) -> None:
    """One step in this fresh process; the resident size is sampled every millisecond from a thread."""
    mode, frames = args.peak[0], int(args.peak[1])
    unet, mm = build(args)
    peak, done = [0.0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_mib())
            time.sleep(0.001)

    with torch.no_grad():
        fn = step(unet, mm, frames, mode, args)
        before = rss_mib()
        watcher = threading.Thread(target=sample, daemon=True)
        watcher.start()
        fn()
        done.set()
        watcher.join()
    print(json.dumps({"mib": max(peak[0], rss_mib()) - before}))


def row(label: str, ours: float, other: float) -> None:
    print(f"{label:<46} {ours:9.0f} / {other:9.0f} ms = {ours / other:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "fp16"])
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--size", type=int, default=16, help="latent size (image size / 8)")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--frames", default="16,32,64,128", help="frame counts for the memory rows")
    parser.add_argument("--skip-diffusers", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-speed", action="store_true", help="only the memory rows")
    parser.add_argument("--peak", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.peak:
        return child_peak(args)
    print(f"device={args.device} dtype={args.dtype} channels={args.channels} latent={args.size}x{args.size} "
          f"torch={torch.__version__}")
    if not args.skip_speed:
        speed_rows(args)
    if args.skip_memory:
        return
    print(f"{'frames':>6} {'unet MiB':>9} {'motion_module MiB':>18}")
    for frames in (int(f) for f in args.frames.split(",")):
        print(f"{frames:>6} {peak_of('unet', frames, args):>9.0f} {peak_of('motion_module', frames, args):>18.0f}")


def speed_rows(args: argparse.Namespace) -> None:
    """Rows 1-3: step-time ratios."""
    unet, mm = build(args)
    with torch.no_grad():
        ours16 = timed(step(unet, mm, 16, "unet", args), args.device, args.repeat)
        bare16 = timed(step(unet, None, 16, "unet", args), args.device, args.repeat)
        if not args.skip_diffusers:
            theirs = timed(diffusers_step(args, 16), args.device, args.repeat)
            their_bare = timed(diffusers_step(args, 16, motion=False), args.device, args.repeat)
            row("ours / diffusers UNetMotionModel, 16 frames", ours16, theirs)
            row("diffusers: motion / bare UNet2DCondition", theirs, their_bare)
        row("ours / bare UNet (module overhead), 16 frames", ours16, bare16)
        motion = timed(step(unet, mm, 64, "motion_module", args), args.device, args.repeat)
        whole = timed(step(unet, mm, 64, "unet", args), args.device, args.repeat)
        row("motion_module / unet windows, 64 frames", motion, whole)


if __name__ == "__main__":
    main()
