"""Frame interpolation of a finished clip: the frame-count and rate rules, the RIFE runner, the dispatch.

The rule (``interp_x`` = X, the reference's "replace each input frame with X interpolated output frames"):
N frames give exactly N * X frames. Frame i is followed by X - 1 frames at times k / X (k = 1 .. X-1) towards
frame i + 1; after the last frame come X - 1 frames towards the first frame in a closed loop (R-P, R+P, A, and
the forward-backward clip of A), so the loop stays seamless, else the last frame is held for X - 1 frames.
Original frame i lands at output frame i * X, so at the rate FPS * X (the default) it plays at the same time
as before: the duration, and audio trimmed to it, are unchanged. X <= 1 adds nothing.

RIFE runs here (``rife.IFNet``, weights read safely by ``loading.read_state_dict``) on the host's device in
batches of ``batch`` frames to make: only one batch of frame pairs is on the device at a time, the clip stays
on the CPU as 8-bit pixels. A pair of identical frames is not sent to the network: its frames are copies.
FILM goes through the Deforum extension (``film.py``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from motion_module.errors import InterpolationError
from motion_module.files.loading import file_version, read_state_dict
from motion_module.params.fields import ClosedLoop, FrameInterpolation
from motion_module.params.request import AnimateDiffParams
from motion_module.video.encoders import frames_array
from motion_module.video.rife import IFNet, load_ifnet

logger = logging.getLogger("animatediff")
Progress = Callable[[int, int], None]
RIFE_SUFFIXES = (".safetensors", ".pkl", ".pth", ".pt", ".ckpt")
RIFE_PAGE = "https://github.com/hzwer/Practical-RIFE"
LOOPING = (ClosedLoop.R_MINUS_P, ClosedLoop.R_PLUS_P, ClosedLoop.A)
_cache: dict[object, IFNet] = {}


@dataclass(frozen=True)
class InterpHost:
    """What interpolation needs from the host: the UNet's ``device``, the motion-module folder (default home
    of the RIFE weights), the host's models folder (Deforum keeps FILM's model below it) and a progress
    callback ``(done, total)``."""

    device: torch.device | str = "cpu"
    model_root: Path | None = None
    models_path: Path | None = None
    progress: Progress | None = None


@dataclass(frozen=True)
class Interpolation:
    """One request's interpolation: ``method`` with ``factor`` X, ``loop`` (interpolate last -> first), the
    output rate ``fps``, where RIFE's weights are looked for (``weights_dir``), batch size and host."""

    method: FrameInterpolation
    factor: int
    loop: bool
    fps: Fraction | float
    weights_dir: Path | None = None
    batch: int = 4
    host: InterpHost = InterpHost()

    @property
    def label(self) -> str:
        return f"{self.method.value} x{self.factor}"


def interpolated_count(frames: int, factor: int) -> int:
    """Frames after interpolation: N * X (N for X <= 1)."""
    return frames * max(factor, 1)


def interpolated_fps(fps: float | Fraction, factor: int, explicit: float = 0.0) -> Fraction | float:
    """The output rate: ``explicit`` when above 0, else ``fps`` * X exactly (the clip keeps its duration)."""
    if explicit > 0:
        return explicit
    base = fps if isinstance(fps, Fraction) else Fraction(fps).limit_denominator(100_000)
    return base * max(factor, 1)


def links(frames: int, loop: bool) -> list[tuple[int, int]]:
    """The frame pairs interpolated, in order: (0, 1) ... (N-2, N-1), and (N-1, 0) for a loop of N >= 2."""
    pairs = [(i, i + 1) for i in range(frames - 1)]
    return pairs + [(frames - 1, 0)] if loop and frames > 1 else pairs


def interpolation_for(params: AnimateDiffParams, fps: Fraction | float, *, ping_pong: bool = False,
                      weights_dir: Path | None = None, batch: int = 4, host: InterpHost | None = None
                      ) -> Interpolation | None:
    """The interpolation ``params`` ask for on a clip playing at ``fps``, or None (Off, or X <= 1)."""
    if params.interp is FrameInterpolation.OFF or params.interp_x <= 1:
        return None
    loop = ping_pong or params.closed_loop in LOOPING
    rate = interpolated_fps(fps, params.interp_x, params.interp_fps)
    return Interpolation(params.interp, params.interp_x, loop, rate, weights_dir, max(1, batch), host or InterpHost())


def find_rife_weights(folder: Path) -> Path:
    """The RIFE weight file in ``folder``: ``flownet.pkl`` (the official name) or the first file by name whose
    name starts with ``rife`` (.safetensors/.pkl/.pth/.pt/.ckpt)."""
    found = sorted((p for p in folder.glob("*") if p.is_file() and p.suffix.lower() in RIFE_SUFFIXES
                    and (p.name.lower() == "flownet.pkl" or p.name.lower().startswith("rife"))),
                   key=lambda p: (p.name.lower() != "flownet.pkl", p.name.casefold()))
    if not found:
        raise InterpolationError(f"no RIFE weights in {folder}: download Practical-RIFE v4.25 or 4.26 from {RIFE_PAGE} "
                                 "and put train_log/flownet.pkl from its zip there (any name starting with 'rife' "
                                 "also works, e.g. rife-v4.26.pkl), or set the folder in Settings > AnimateDiff")
    return found[0]


def load_rife(path: Path) -> IFNet:
    """The network for a weight file, cached (one file) until the file changes; kept on the CPU."""
    key = file_version(path)
    if key not in _cache:
        _cache.clear()
        _cache[key] = load_ifnet(read_state_dict(path))
    return _cache[key]


def _pad(x: torch.Tensor, multiple: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    return F.pad(x, (0, math.ceil(w / multiple) * multiple - w, 0, math.ceil(h / multiple) * multiple - h))


def _batch(net: IFNet, pixels: torch.Tensor, tasks: Sequence[tuple[int, int, int]], factor: int,
           device: torch.device | str) -> list[Image.Image]:
    h, w = pixels.shape[-2:]
    first = _pad(pixels[[a for a, _, _ in tasks]].to(device).float() / 255, net.config.multiple)
    second = _pad(pixels[[b for _, b, _ in tasks]].to(device).float() / 255, net.config.multiple)
    times = torch.tensor([k / factor for _, _, k in tasks], device=device)
    with torch.inference_mode():
        made = net(first, second, times)[..., :h, :w]
    rgb = (made.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(frame) for frame in rgb]


def rife_frames(frames: Sequence[Image.Image], factor: int, loop: bool, net: IFNet, *,
                device: torch.device | str = "cpu", batch: int = 4, progress: Progress | None = None
                ) -> list[Image.Image]:
    """The clip with X - 1 RIFE frames after each frame (see the module's rule); the originals are kept as is."""
    if factor <= 1 or not frames:
        return list(frames)
    pixels = torch.from_numpy(frames_array(frames)).permute(0, 3, 1, 2)
    pairs = [(a, b) for a, b in links(len(frames), loop) if not torch.equal(pixels[a], pixels[b])]
    tasks = [(a, b, k) for a, b in pairs for k in range(1, factor)]
    made: dict[tuple[int, int, int], Image.Image] = {}
    net.to(device)
    try:
        for start in range(0, len(tasks), batch):
            chunk = tasks[start:start + batch]
            made.update(zip(chunk, _batch(net, pixels, chunk, factor, device)))
            if progress is not None:
                progress(start + len(chunk), len(tasks))
    finally:
        net.to("cpu")
        if torch.device(device).type == "cuda":  # the batches' memory back to the host (also after OOM)
            torch.cuda.empty_cache()
    following = dict(links(len(frames), loop))
    out: list[Image.Image] = []
    for i, frame in enumerate(frames):
        out.append(frame)
        out += [made[(i, following[i], k)] if (i, following.get(i), k) in made else frame.copy()
                for k in range(1, factor)]
    return out


def interpolate(frames: Sequence[Image.Image], job: Interpolation) -> list[Image.Image]:
    """``frames`` interpolated as ``job`` says: N * X frames. Raises on failure (the caller keeps the frames)."""
    if job.method is FrameInterpolation.FILM:
        from motion_module.video.film import film_frames

        return film_frames(frames, job.factor, job.loop, job.host)
    folder = job.weights_dir or job.host.model_root
    if folder is None:
        raise InterpolationError("no folder for the RIFE weights was given")
    net = load_rife(find_rife_weights(folder))
    logger.info("AnimateDiff: RIFE x%d on %d frames (%s)", job.factor, len(frames), job.host.device)
    return rife_frames(frames, job.factor, job.loop, net, device=job.host.device, batch=job.batch,
                       progress=job.host.progress)


__all__ = ["InterpHost", "Interpolation", "find_rife_weights", "interpolate", "interpolated_count", "interpolated_fps",
           "interpolation_for", "links", "load_rife", "rife_frames"]
