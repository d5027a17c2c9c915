"""Pure schedules: context windows, window fusion weights and the training beta schedules.

Nothing here touches a model. Every function is deterministic and cheap, so the WebUI adapter
can plan a whole run (windows per step, schedule per family) before sampling starts.

Context windows
---------------
A video of ``num_frames`` latents is denoised in windows of ``min(context_length, num_frames)``
frames. :func:`context_windows` returns the windows of one sampling step. The layout follows
the reference's "uniform" schedule (features.md §3.6): windows of stride level ``k`` hold frames
``k`` apart, start every ``context_length*k - overlap`` frames, and rotate with the step by the
bit-reversed ("ordered halving") fraction of the step number. Unlike the reference:

* no window ever holds a frame twice (a stride level is used only where ``(C-1)*k + 1 <= L``),
* every window has exactly ``min(C, L)`` frames, every frame is covered at every step,
* mode ``"N"`` never wraps from the last frame to the first, and always uses the minimal number
  of stride-1 windows ``ceil((L-O)/(C-O))``; it rotates by moving the *interior* windows inside
  the slack that this minimal cover leaves (step 0 is the evenly spread cover).

Closed-loop modes (kept for compatibility with the reference's infotext and API):
``"N"`` no loop; ``"R-P"`` and ``"R+P"`` windows wrap around the end (they differ only in
prompt interpolation, which is cyclic for ``"R+P"``); ``"A"`` like ``"R+P"`` plus the extra
closing window the reference emits (its loop runs to ``L + pad`` instead of ``L + pad - O``).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from operator import index as _as_index
from typing import Any

import torch

from motion_module.errors import ParameterError
from motion_module.params.fields import ClosedLoop, Fusion

CLOSED_LOOP_MODES: tuple[str, ...] = tuple(mode.value for mode in ClosedLoop)  # N, R-P, R+P, A
FUSION_KINDS: tuple[str, ...] = tuple(kind.value for kind in Fusion)  # pyramid, flat

Window = list[int]


# --------------------------------------------------------------------------- helpers
def _int_arg(field: str, value: Any, minimum: int) -> int:
    """Return ``value`` as an int >= ``minimum`` or raise ParameterError naming ``field``."""
    if isinstance(value, bool):
        raise ParameterError(field, f"expected an integer, got {value!r}; pass a whole number")
    try:
        number = _as_index(value)
    except TypeError:
        raise ParameterError(field, f"expected an integer, got {value!r}; pass a whole number") from None
    if number < minimum:
        raise ParameterError(field, f"must be >= {minimum}, got {number}; raise it to at least {minimum}")
    return number


def closed_loop_mode(value: Any) -> str:
    """Normalise a closed-loop mode (a string or an enum whose ``.value`` is one) to its code."""
    mode = getattr(value, "value", value)
    if mode not in CLOSED_LOOP_MODES:
        raise ParameterError(
            "closed_loop", f"unknown mode {value!r}; use one of {', '.join(CLOSED_LOOP_MODES)}"
        )
    return str(mode)


def ordered_halving(step: int) -> float:
    """Bit-reversed binary fraction of ``step``: 0, 1/2, 1/4, 3/4, 1/8, 5/8, 3/8, 7/8, ..."""
    return float(_halving(step))


def _halving(step: int) -> Fraction:
    result, bit, n = Fraction(0), Fraction(1, 2), step
    while n:
        if n & 1:
            result += bit
        n >>= 1
        bit /= 2
    return result


def _round_half_up(value: Fraction) -> int:
    return int((2 * value.numerator + value.denominator) // (2 * value.denominator))


def stride_levels(num_frames: int, context_length: int, stride: int) -> list[int]:
    """Usable stride levels ``k = 1, 2, 4, ...`` for a video.

    The reference uses ``min(stride, ceil(log2(L / C)) + 1)`` levels; a level is kept here only
    when a window of ``C`` frames spaced ``k`` apart fits without repeating a frame,
    i.e. ``(C - 1) * k + 1 <= L``.
    """
    if num_frames <= context_length:
        return [1]
    doublings = 0
    while context_length << doublings < num_frames:
        doublings += 1
    levels: list[int] = []
    for level in range(min(stride, doublings + 1)):
        k = 1 << level
        if (context_length - 1) * k + 1 > num_frames:
            break
        levels.append(k)
    return levels


# --------------------------------------------------------------------------- windows
def _wrapping_windows(
    frames: int, context: int, overlap: int, k: int, h: Fraction, closing: bool
) -> list[Window]:
    """Windows of stride ``k`` whose indices are taken modulo ``frames`` (reference layout)."""
    pad = _round_half_up(frames * h)
    start = int(h * k) + pad
    end = frames + pad - (0 if closing else overlap)
    hop = context * k - overlap
    windows = []
    while start < end:
        windows.append([(start + j * k) % frames for j in range(context)])
        start += hop
    return windows


def _minimal_cover(frames: int, context: int, overlap: int, t: Fraction) -> list[Window]:
    """The minimal non-wrapping cover by consecutive windows, interior windows placed by ``t``.

    With ``m = ceil((L - C) / (C - O))`` gaps between ``m + 1`` window starts, the first start is
    0 and the last ``L - C``; window ``i`` may start anywhere in ``[lo_i, hi_i]`` such that every
    gap stays within ``1 .. C - O`` (overlap >= O). ``t`` in [0, 1) interpolates between the
    earliest and latest packing; integer arithmetic keeps every gap inside its bounds.
    """
    span, hop = frames - context, context - overlap
    gaps = -(-span // hop)
    windows = []
    for i in range(gaps + 1):
        lo = max(i, span - (gaps - i) * hop)
        hi = min(i * hop, span - (gaps - i))
        start = _round_half_up(lo + t * (hi - lo))
        windows.append(list(range(start, start + context)))
    return windows


def _clamped_strided(
    frames: int, context: int, overlap: int, k: int, h: Fraction
) -> list[Window]:
    """Stride-``k`` windows for mode N: the wrapping layout, each window moved back inside."""
    span = (context - 1) * k + 1
    windows = []
    for window in _wrapping_windows(frames, context, overlap, k, h, closing=False):
        start = min(window[0], frames - span)
        windows.append(list(range(start, start + span, k)))
    return windows


def context_windows(
    num_frames: int,
    context_length: int,
    stride: int,
    overlap: int,
    closed_loop: Any,
    step: int,
) -> list[Window]:
    """Frame-index windows for one sampling step.

    Args:
        num_frames: video length L (>= 1).
        context_length: frames per window C (>= 1); windows hold ``min(C, L)`` frames.
        stride: number of stride levels S (>= 1); level ``k = 2**i`` windows hold every k-th frame.
        overlap: O, frames shared by neighbouring stride-1 windows, ``0 .. C-1``.
        closed_loop: ``"N"``, ``"R-P"``, ``"R+P"`` or ``"A"`` (or an enum with that ``.value``).
        step: sampling step n (>= 0); windows rotate by ``ordered_halving(n)``.

    Returns:
        Windows as lists of frame indices. ``L <= C`` gives exactly ``[[0, ..., L-1]]``.

    Raises:
        ParameterError: named after the user-facing field (``video_length``, ``context``,
            ``stride``, ``overlap``, ``closed_loop``, ``step``).
    """
    frames = _int_arg("video_length", num_frames, 1)
    context = _int_arg("context", context_length, 1)
    levels = _int_arg("stride", stride, 1)
    lap = _int_arg("overlap", overlap, 0)
    if lap > context - 1:
        raise ParameterError(
            "overlap", f"must be 0..{context - 1} (below the context length {context}), got {lap}"
        )
    mode = closed_loop_mode(closed_loop)
    n = _int_arg("step", step, 0)
    if frames <= context:
        return [list(range(frames))]
    h = _halving(n)
    windows: list[Window] = []
    for k in stride_levels(frames, context, levels):
        if mode == "N":
            if k == 1:
                windows += _minimal_cover(frames, context, lap, (h + Fraction(1, 2)) % 1)
            else:
                windows += _clamped_strided(frames, context, lap, k, h)
        else:
            windows += _wrapping_windows(frames, context, lap, k, h, closing=mode == "A")
    unique: dict[tuple[int, ...], Window] = {}
    for window in windows:
        unique.setdefault(tuple(window), window)
    return list(unique.values())


def evaluations_per_frame(windows: list[Window], num_frames: int) -> float:
    """UNet frame-evaluations per output frame for one step: ``sum(len(w)) / num_frames``."""
    frames = _int_arg("video_length", num_frames, 1)
    return sum(len(window) for window in windows) / frames


def fusion_weights(
    length: int,
    kind: str = "pyramid",
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Per-position weights (shape ``(length,)``) for fusing overlapping window outputs.

    ``"pyramid"``: ``min(j + 1, length - j)``, e.g. 1,2,3,2,1 or 1,2,2,1 - window edges count
    least, so seams fade. ``"flat"``: all ones (plain average).
    """
    size = _int_arg("length", length, 1)
    kind = getattr(kind, "value", kind)
    if kind == "pyramid":
        position = torch.arange(size, dtype=torch.float64)
        weights = torch.minimum(position + 1, size - position)
    elif kind == "flat":
        weights = torch.ones(size, dtype=torch.float64)
    else:
        raise ParameterError("fusion", f"unknown kind {kind!r}; use one of {', '.join(FUSION_KINDS)}")
    return weights.to(dtype=dtype, device=device)


# --------------------------------------------------------------------------- beta schedules
BETA_SCHEDULES: tuple[str, ...] = ("linear", "scaled_linear")


def beta_schedule(
    name: str,
    num_train_timesteps: int = 1000,
    beta_start: float = 0.00085,
    beta_end: float = 0.012,
) -> torch.Tensor:
    """Betas, shape ``(num_train_timesteps,)``, float64, named the diffusers way.

    ``"linear"``: betas evenly spaced from start to end (the AnimateDiff training schedule;
    ldm calls it "sqrt_linear"). ``"scaled_linear"``: sqrt(beta) evenly spaced, then squared
    (the SD/SDXL default; ldm calls it "linear"). The arithmetic is diffusers' float32 arithmetic,
    because the motion modules were trained with diffusers schedulers; the result is widened
    to float64 so callers can cast it once to whatever the host keeps.
    """
    steps = _int_arg("num_train_timesteps", num_train_timesteps, 1)
    if name == "linear":
        betas = torch.linspace(beta_start, beta_end, steps, dtype=torch.float32)
    elif name == "scaled_linear":
        betas = torch.linspace(beta_start**0.5, beta_end**0.5, steps, dtype=torch.float32) ** 2
    else:
        raise ParameterError(
            "beta_schedule", f"unknown schedule {name!r}; use one of {', '.join(BETA_SCHEDULES)}"
        )
    return betas.to(torch.float64)


def alphas_cumprod(
    name: str,
    num_train_timesteps: int = 1000,
    beta_start: float = 0.00085,
    beta_end: float = 0.012,
) -> torch.Tensor:
    """Cumulative product of ``1 - beta``, shape ``(num_train_timesteps,)``, float64."""
    betas = beta_schedule(name, num_train_timesteps, beta_start, beta_end).to(torch.float32)
    return torch.cumprod(1.0 - betas, dim=0).to(torch.float64)


@dataclass(frozen=True)
class ScheduleSpec:
    """The noise schedule a motion-module family was trained with (diffusers naming)."""

    beta_schedule: str
    beta_start: float
    beta_end: float
    num_train_timesteps: int = 1000
    timestep_spacing: str = "leading"
    source: str = ""

    @property
    def label(self) -> str:
        """Short text for infotext, e.g. ``"linear 0.00085-0.012"``."""
        return f"{self.beta_schedule} {self.beta_start:g}-{self.beta_end:g}"

    def betas(self) -> torch.Tensor:
        """Betas of this schedule, float64, shape ``(num_train_timesteps,)``."""
        return beta_schedule(self.beta_schedule, self.num_train_timesteps, self.beta_start, self.beta_end)

    def alphas_cumprod(self) -> torch.Tensor:
        """alphas_cumprod of this schedule, float64, shape ``(num_train_timesteps,)``."""
        return alphas_cumprod(self.beta_schedule, self.num_train_timesteps, self.beta_start, self.beta_end)


_AD_SD15 = "guoyww/AnimateDiff configs/inference/inference-v*.yaml: linear 0.00085-0.012"

#: Training schedule per family. HotShot-XL: its own code never sets betas - both training
#: (hotshotco/Hotshot-XL fine_tune.py, ``DDPMScheduler.from_pretrained(<model>, subfolder=
#: "scheduler")``) and inference (inference.py keeps ``pipe.scheduler.config`` when swapping the
#: scheduler class) use the scheduler config shipped with the SDXL-based diffusers model repo,
#: i.e. SDXL's scaled_linear 0.00085-0.012. That is the checkpoint default (no override), which
#: ComfyUI-AnimateDiff-Evolved also labels "HotshotXL/default" (its PR #73); the reference A1111
#: extension's plain linear for HotShot has no support in HotShot's code. The HF config file itself
#: could not be read from this environment; if it ever turns out different, change this entry.
FAMILY_SCHEDULES: dict[str, ScheduleSpec] = {
    "v1": ScheduleSpec("linear", 0.00085, 0.012, source=_AD_SD15),
    "v2": ScheduleSpec("linear", 0.00085, 0.012, source=_AD_SD15),
    "v3": ScheduleSpec("linear", 0.00085, 0.012, source=_AD_SD15),
    "animatelcm": ScheduleSpec(
        "linear", 0.00085, 0.012,
        source="G-U-N/AnimateLCM#24 (trained with linear); animatelcm_sd15/configs/inference-t2v.yaml",
    ),
    "sdxl": ScheduleSpec(
        "scaled_linear", 0.00085, 0.020,
        source="guoyww/AnimateDiff@sdxl configs/inference/inference.yaml (beta_end 0.020, AD#376)",
    ),
    "hotshot": ScheduleSpec(
        "scaled_linear", 0.00085, 0.012,
        source="hotshotco/Hotshot-XL fine_tune.py/inference.py use the model repo's SDXL scheduler",
    ),
    "lightning": ScheduleSpec(
        "linear", 0.00085, 0.012, timestep_spacing="trailing",
        source="ByteDance/AnimateDiff-Lightning model card: Euler, trailing spacing, linear betas",
    ),
}


def family_schedule(family: Any) -> ScheduleSpec:
    """The :class:`ScheduleSpec` of a family name (or an enum whose ``.value`` is one)."""
    key = str(getattr(family, "value", family)).lower()
    if key not in FAMILY_SCHEDULES:
        raise ParameterError(
            "family", f"unknown motion-module family {family!r}; use one of {', '.join(FAMILY_SCHEDULES)}"
        )
    return FAMILY_SCHEDULES[key]
