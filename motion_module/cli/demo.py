"""``python -m motion_module demo --out DIR``: the whole pipeline on a tiny model, RANDOM weights.

What runs is the real engine: a random motion module is written to safetensors and read back with
``load_motion_module`` (spec detection included), the run is planned by ``run.plan_run`` (frames,
context windows, prompt travel, the family's beta schedule), the modules are inserted with
``patch.injected`` into :mod:`demo_unet` (a small UNet with ldm's block layout), an Euler sampler
with classifier-free guidance denoises the clip window by window (``RunPlan.denoise`` ->
``sampling.windowed_denoise``), and ``output.save_video`` writes every format with its infotext.

What is stand-in: the UNet and motion-module weights are random, the "text encoder" maps each
prompt to a fixed random ``(77, 32)`` tensor (seeded by the prompt's CRC-32), the denoiser's
prediction is a synthetic scene drawn from the conditioning plus the random UNet's output
(:class:`SceneDenoiser`: a disc whose place follows the prompt, so prompt travel makes it drift
smoothly across the frames), and there is no VAE: latents become colours through a linear 4 -> 3
map (rounded values of the well-known SD1.x "latent preview" approximation), are rescaled for
display and enlarged 8x (nearest). The demo shows the pipeline running and motion you can see,
not a picture.
"""

from __future__ import annotations

import math
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file
from torch import Tensor, nn

from motion_module.cli.demo_cli import FAMILIES, RANDOM_NOTE, DemoConfig, parse_config
from motion_module.cli.demo_unet import CONTEXT_DIM, randomize, toy_unet
from motion_module.core.injection import injected
from motion_module.core.model import MotionModule
from motion_module.core.run import RunPlan, plan_run
from motion_module.core.schedules import evaluations_per_frame
from motion_module.errors import AnimateDiffError
from motion_module.files.loading import load_motion_module, short_hash
from motion_module.files.spec import MotionModuleSpec
from motion_module.params.infotext import INFOTEXT_KEY, quote_value, to_infotext
from motion_module.video.files import EncodeOptions, SavedVideo, ping_pong, save_video

CHANNELS = (32, 64, 128, 128)
TOKENS = 77
MAX_ROWS = 64  # rows per UNet call: a group's windows are batched up to this (fewer calls: faster)
# Latent channel -> (R, G, B): rounded SD1.x "latent preview" approximation (stands in for the VAE).
LATENT_BACKGROUND = torch.tensor([0.2, 0.6, 0.6, 0.9])  # a dark sea-blue in the latent preview colours
LATENT_RGB = torch.tensor([[0.30, 0.21, 0.21], [0.19, 0.29, 0.17], [-0.16, 0.19, 0.26],
                           [-0.18, -0.27, -0.47]])
Log = Callable[[str], None]


@dataclass
class DemoResult:
    """What a run made. ``latents``: ``(F, 4, size/8, size/8)``; ``frames``: what was saved (after
    ping-pong); ``windows``: those of step 0; ``evaluations``: UNet frame-evaluations per frame
    and group, per step."""

    latents: Tensor
    frames: list[Image.Image]
    saved: SavedVideo
    spec: MotionModuleSpec
    sites: list[str]
    windows: list[list[int]]
    evaluations: list[float] = field(default_factory=list)
    infotext: str = ""


# ------------------------------------------------------------------------------------- models
def random_motion_module(family: str, seed: int) -> MotionModule:
    """A random SD1.5-channel motion module of ``family`` (v1/v2/v3), built in memory."""
    max_frames, mid = FAMILIES[family]
    module = MotionModule(MotionModuleSpec(family, "sd15", CHANNELS, max_frames, mid))
    randomize(module, seed, gain=0.5)
    return module.eval().requires_grad_(False)


def round_trip(module: MotionModule, folder: Path) -> tuple[MotionModule, str, str]:
    """Write ``module`` as safetensors and load it back (spec detection included).

    Returns (loaded module, file name, short hash of the file).
    """
    path = folder / f"demo-random-{module.spec.family}.safetensors"
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(path))
    loaded = load_motion_module(path)
    if (loaded.spec.family, loaded.spec.mid_block) != (module.spec.family, module.spec.mid_block):
        raise RuntimeError(f"spec detection read back {loaded.spec.describe()} for a "
                           f"{module.spec.family} module; please report this")
    return loaded, path.name, short_hash(path)


def encode_prompt(text: str) -> Tensor:
    """Stand-in text encoder: a fixed random ``(77, 32)`` tensor per prompt (CRC-32 seeded)."""
    gen = torch.Generator().manual_seed(zlib.crc32(text.encode("utf-8")))
    return torch.randn(TOKENS, CONTEXT_DIM, generator=gen)


def travel_prompt(frames: int) -> str:
    """A prompt-travel text: a head line, keyframes at 0 and ``frames // 2`` (0 only if 1 frame)."""
    keys = f"0: a calm sea\n{frames // 2}: a storm\n" if frames >= 2 else "0: a calm sea\n"
    return "a lighthouse on a cliff, waves\n" + keys


SCENE_SEED = 7  # the fixed random projections from a prompt's conditioning to its scene
DETAIL = 0.35  # weight of the random UNet (with the motion modules) in each prediction


class SceneDenoiser:
    """k-diffusion-style denoiser ``(x, sigma (N,), context) -> x0`` that draws a subject.

    A random UNet predicts no picture, so the demo makes its prediction deterministic and visible:
    ``x0 = scene(context) + DETAIL * unet(x / sqrt(sigma^2 + 1), t(sigma), context)``. ``scene`` is a
    soft bright disc on a dark latent background whose place on a circle, size and colour are smooth functions
    of the prompt's conditioning (fixed random projections, then tanh), and nothing for the empty
    (negative) prompt. Prompt travel blends conditionings frame by frame, so the disc drifts
    smoothly from one keyframe's place to the next; the UNet term, with the motion modules
    injected, adds texture that the motion module keeps coherent inside each context window.
    ``t(sigma)`` is the nearest timestep of the run's beta schedule.
    """

    def __init__(self, unet: nn.Module, alphas_cumprod: Tensor, blank: Tensor) -> None:
        self.unet, self.blank = unet, blank
        self.sigmas = ((1 - alphas_cumprod) / alphas_cumprod).sqrt().float()
        self.log_sigmas = self.sigmas.log()
        gen = torch.Generator().manual_seed(SCENE_SEED)
        self.projection = torch.randn(blank.numel(), 6, generator=gen) / math.sqrt(blank.numel())

    def step_sigmas(self, steps: int) -> Tensor:
        """``steps + 1`` sigmas: evenly spaced timesteps, noisiest to cleanest, then 0."""
        index = torch.linspace(len(self.sigmas) - 1, 0, steps).round().long()
        return torch.cat([self.sigmas[index], torch.zeros(1)])

    def scene(self, context: Tensor, side: int) -> Tensor:
        """``(N, 77, D)`` -> ``(N, 4, side, side)`` latents of each row's disc (zeros: empty prompt)."""
        q = context.flatten(1).float() @ self.projection
        p = torch.tanh(2.0 * q)  # (N, 6), each in (-1, 1)
        angle = 3 * torch.atan2(q[:, 1], q[:, 0])[:, None, None]  # x3: prompts far apart on the circle
        grid = (torch.arange(side, dtype=torch.float32) + 0.5) / side
        cx, cy = 0.5 + 0.28 * angle.cos(), 0.5 + 0.28 * angle.sin()
        radius = 0.22 + 0.06 * p[:, 2, None, None]
        distance = ((grid[None, None, :] - cx) ** 2 + (grid[None, :, None] - cy) ** 2).sqrt()
        disc = torch.sigmoid((radius - distance) * side * 1.5)  # (N, side, side)
        colour = torch.stack([p[:, 3], p[:, 4], p[:, 5], -p[:, 3].abs() - 1.0], dim=1)  # latent channels
        scene = 0.4 * LATENT_BACKGROUND[None, :, None, None] + colour[:, :, None, None] * disc[:, None]
        blank = (context == self.blank.to(context)).flatten(1).all(dim=1)
        return scene * (~blank).float()[:, None, None, None]

    def __call__(self, x: Tensor, sigma: Tensor, context: Tensor) -> Tensor:
        t = (self.log_sigmas[None] - sigma.log()[:, None]).abs().argmin(dim=1).float()
        detail = self.unet(x * (sigma.view(-1, 1, 1, 1) ** 2 + 1).rsqrt(), t, context)
        return self.scene(context, x.shape[-1]).to(x) + DETAIL * detail


# ----------------------------------------------------------------------------------- sampling
def sample(unet: nn.Module, mm: MotionModule, plan: RunPlan, prompt: str, config: DemoConfig,
           log: Log) -> tuple[Tensor, list[str], list[float]]:
    """Euler with CFG over ``[cond; uncond]`` (2F rows, group-major) inside ``injected``.

    Returns the latents ``(F, 4, size/8, size/8)``, the injection sites and the UNet
    frame-evaluations per frame and group of every step.
    """
    frames, side = plan.frames, config.size // 8
    texts = plan.prompts(prompt, 1) or [prompt] * frames
    per_frame = plan.frame_conds(torch.stack([encode_prompt(text) for text in texts]))
    cond = torch.cat([per_frame, encode_prompt("").expand(frames, -1, -1)])
    denoiser = SceneDenoiser(unet, plan.schedule.alphas_cumprod(), encode_prompt(""))
    sigmas = denoiser.step_sigmas(config.steps)
    noise = torch.Generator().manual_seed(config.seed)
    x = torch.randn((frames, 4, side, side), generator=noise) * sigmas[0]
    evaluations: list[float] = []
    start = time.perf_counter()
    with injected(unet, mm, plan.context) as handle, torch.no_grad():
        for step in range(config.steps):
            rows = torch.cat([x, x])
            out = plan.denoise(denoiser, rows, sigmas[step].expand(rows.shape[0]), cond,
                               step=step, frames=handle, max_rows=MAX_ROWS)
            denoised = out[frames:] + config.cfg * (out[:frames] - out[frames:])
            x = x + (x - denoised) / sigmas[step] * (sigmas[step + 1] - sigmas[step])
            windows = plan.windows(step)
            evaluations.append(evaluations_per_frame(windows, frames))
            log(f"  step {step + 1}/{config.steps}: sigma {float(sigmas[step]):7.3f}, "
                f"{len(windows)} window(s) x 2 groups, {time.perf_counter() - start:5.1f} s")
        sites = list(handle.sites)
    if not torch.isfinite(x).all():
        raise RuntimeError("the demo sampler produced non-finite latents; please report this")
    return x, sites, evaluations


def decode(latents: Tensor, size: int) -> list[Image.Image]:
    """Latents ``(F, 4, h, w)`` -> F RGB images ``size`` x ``size`` (linear colours, nearest 8x).

    Random latents have no meaningful scale, so the clip is rescaled as a whole (one factor for
    all frames: no added flicker) to put its 99th percentile at full brightness.
    """
    rgb = torch.einsum("fchw,cr->frhw", latents.float(), LATENT_RGB)
    magnitude = rgb.abs().flatten()
    level = magnitude.kthvalue(max(1, round(0.99 * magnitude.numel()))).values
    rgb = F.interpolate(rgb / level.clamp_min(1e-6), size=(size, size), mode="nearest")
    pixels = ((rgb.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1)
    return [Image.fromarray(frame, "RGB") for frame in pixels.numpy()]


# ----------------------------------------------------------------------------------- infotext
def a1111_infotext(prompt: str, config: DemoConfig, entry: str) -> str:
    """WebUI-style parameters: the prompt lines, then ``Steps: ..., AnimateDiff: "..."``."""
    fields = [("Steps", str(config.steps)), ("Sampler", "Euler"), ("CFG scale", f"{config.cfg:g}"),
              ("Seed", str(config.seed)), ("Size", f"{config.size}x{config.size}"),
              ("Model", "toy-unet-random"), (INFOTEXT_KEY, entry)]
    line = ", ".join(f"{key}: {quote_value(value)}" for key, value in fields)
    return prompt.rstrip("\n") + "\n" + line


def format_windows(windows: list[list[int]]) -> str:
    """``[[0..15], [12..23, 0..3]]`` -> ``"[0-15] [12-23,0-3]"``: runs of frames shortened."""

    def runs(window: list[int]) -> str:
        parts, begin = [], 0
        for i in range(1, len(window) + 1):
            if i == len(window) or window[i] != window[i - 1] + 1:
                a, b = window[begin], window[i - 1]
                parts.append(str(a) if a == b else f"{a}-{b}")
                begin = i
        return "[" + ",".join(parts) + "]"

    return " ".join(runs(w) for w in windows)


# ---------------------------------------------------------------------------------------- run
def _load(config: DemoConfig, log: Log) -> tuple[MotionModule, str, str]:
    with tempfile.TemporaryDirectory(prefix="animatediff-demo-") as folder:
        mm, name, digest = round_trip(random_motion_module(config.family, config.mm_seed),
                                      Path(folder))
    log(f"motion module: {mm.spec.describe()}; random, saved as {name} and loaded back "
        f"(hash {digest})")
    return mm, name, digest


def _save(frames: list[Image.Image], config: DemoConfig, infotext: str, log: Log) -> SavedVideo:
    options = EncodeOptions(fps=config.fps, loop=config.params().loop_number)
    saved = save_video(frames, config.out, seed=config.seed, formats=config.formats,
                       infotext=infotext, options=options)
    for fmt, path in saved.files.items():
        files = list(path.iterdir()) if path.is_dir() else [path]
        kib = sum(p.stat().st_size for p in files) / 1024
        log(f"wrote {fmt:<4} {path}{'/' if path.is_dir() else ''} ({kib:.1f} KiB)")
    return saved


def run_demo(config: DemoConfig, log: Log = print) -> DemoResult:
    """Build, load, plan, inject, sample, decode and save (see the module docstring)."""
    begin = time.perf_counter()
    log(f"AnimateDiff demo: {RANDOM_NOTE}.")
    unet = toy_unet(config.unet_seed)
    mm, model_name, model_hash = _load(config, log)
    params = config.params(model_name)
    prompt = travel_prompt(config.frames)
    plan = plan_run(params, mm.spec, prompt)
    windows = plan.windows(0)
    log(f"{plan.frames} frames, context {plan.context}, overlap {plan.overlap}, closed loop "
        f"{params.closed_loop.value}, schedule {plan.schedule.label}")
    log(f"windows of step 0: {format_windows(windows)}")
    latents, sites, evaluations = sample(unet, mm, plan, prompt, config, log)
    log(f"{len(sites)} motion modules were injected ({sites[0]} ... {sites[-1]}); UNet restored")
    log(f"UNet frame-evaluations per frame: {evaluations[0]:.2f} per step and group (cond, "
        f"uncond); {2 * sum(evaluations):.1f} in all {config.steps} steps")
    frames = decode(latents, config.size)
    if plan.ping_pong:
        frames = ping_pong(frames)
        log(f"closed loop A, frames <= context: saved forward then backward ({len(frames)} frames)")
    entry = to_infotext(params, model=model_name, model_hash=model_hash, frames=plan.frames,
                        schedule_used=plan.schedule.label, context=plan.context)
    infotext = a1111_infotext(prompt, config, entry)
    saved = _save(frames, config, infotext, log)
    log(f"done in {time.perf_counter() - begin:.1f} s; show the stored parameters with: "
        f"python -m motion_module info {next(iter(saved.files.values()))}")
    return DemoResult(latents, frames, saved, mm.spec, sites, windows, evaluations, infotext)


# ------------------------------------------------------------------------------- command line
def main_demo(argv: list[str]) -> int:
    """``python -m motion_module demo``: 0 on success, 1 on an engine error, 2 on bad options."""
    config = parse_config(argv)
    try:
        config.out.expanduser().mkdir(parents=True, exist_ok=True)  # fail before the work
    except OSError as exc:
        print(f"error: cannot create the output folder {config.out}: {exc}; choose another --out",
              file=sys.stderr)
        return 1
    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        run_demo(config)
    except (AnimateDiffError, OSError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    finally:
        torch.set_num_threads(threads)
    return 0
