"""FreeInit: re-initialise the starting noise from the low frequencies of a previous result.

Frequency convention (the same as diffusers' ``free_init_utils`` and the FreeInit paper code):
after ``fftshift`` over (frames, height, width), index ``t`` of ``T`` maps to the normalised
frequency ``2 t / T - 1`` (exactly centred for even sizes; for odd sizes zero sits ``1/T``
off-centre, as in those implementations), and the temporal axis is scaled by ``d_s / d_t``::

    d2(t, h, w) = (d_s / d_t * (2t/T - 1))**2 + (2h/H - 1)**2 + (2w/W - 1)**2

Low-pass masks: butterworth ``1 / (1 + (d2 / d_s**2) ** order)``, gaussian
``exp(-d2 / (2 d_s**2))``, ideal ``d2 <= d_s**2`` (the reference compares with ``d_s * 2``, a
bug), box: an axis-aligned block around the centre, ``round((N // 2) * d)`` bins each side per
axis (the reference takes the width's half-size from the height). A stop frequency of 0 gives an
all-zero mask (keep nothing of the old latent), as in diffusers.

Layout: A1111 keeps a video as a batch of frames, ``(frames, C, H, W)``; :func:`freeinit_noise`
takes that layout (optionally with leading batch dims, ``(..., frames, C, H, W)``) and
transforms over dims ``(-4, -2, -1)``. Filters are built as ``(F, H, W)`` (or any shape whose
last three dims are ``F, H, W``, e.g. diffusers' ``(B, C, F, H, W)``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.fft as fft

from motion_module.errors import ParameterError
from motion_module.params.fields import FreeInitFilter
from motion_module.params.request import AnimateDiffParams

FILTER_KINDS: tuple[str, ...] = tuple(kind.value for kind in FreeInitFilter)  # butterworth, gaussian, box, ideal


def _frequency_radius(frames: int, height: int, width: int, d_s: float, d_t: float) -> torch.Tensor:
    """Squared normalised distance from the centre, float64, shape ``(F, H, W)``."""

    def axis(size: int) -> torch.Tensor:
        return 2.0 * torch.arange(size, dtype=torch.float64) / size - 1.0

    t = (d_s / d_t * axis(frames)) ** 2
    return t.view(-1, 1, 1) + axis(height).pow(2).view(1, -1, 1) + axis(width).pow(2).view(1, 1, -1)


def _box(frames: int, height: int, width: int, d_s: float, d_t: float) -> torch.Tensor:
    def axis(size: int, stop: float) -> torch.Tensor:
        half, centre = round((size // 2) * stop), size // 2
        index = torch.arange(size)
        return ((index >= centre - half) & (index < centre + half)).to(torch.float64)

    return (axis(frames, d_t).view(-1, 1, 1) * axis(height, d_s).view(1, -1, 1)
            * axis(width, d_s).view(1, 1, -1))


def lowpass_filter(
    shape: tuple[int, ...] | torch.Size,
    kind: str = "butterworth",
    *,
    d_s: float = 0.25,
    d_t: float = 0.25,
    order: int = 4,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Low-pass mask for a latent of ``shape = (..., F, H, W)``, returned with that shape.

    The mask depends only on the last three dims; leading dims are a broadcast (expanded) view.
    ``d_s``/``d_t`` are the spatial/temporal stop frequencies in ``[0, 1]``; ``order`` is the
    Butterworth order (larger is closer to ideal).
    """
    if len(shape) < 3 or min(shape[-3:]) < 1:
        raise ParameterError("freeinit", f"shape {tuple(shape)} must end with (frames, height, width)")
    for name, value in (("freeinit_ds", d_s), ("freeinit_dt", d_t)):
        if not 0.0 <= value <= 1.0:
            raise ParameterError(name, f"stop frequency must be in [0, 1], got {value!r}")
    kind = getattr(kind, "value", kind)
    if kind not in FILTER_KINDS:
        raise ParameterError(
            "freeinit_filter", f"unknown filter {kind!r}; use one of {', '.join(FILTER_KINDS)}"
        )
    if order < 1:
        raise ParameterError("freeinit_order", f"Butterworth order must be >= 1, got {order!r}")
    frames, height, width = (int(s) for s in shape[-3:])
    if d_s == 0 or d_t == 0:
        mask = torch.zeros(frames, height, width, dtype=torch.float64)
    elif kind == "box":
        mask = _box(frames, height, width, d_s, d_t)
    else:
        d2 = _frequency_radius(frames, height, width, d_s, d_t)
        if kind == "butterworth":
            mask = 1.0 / (1.0 + (d2 / d_s**2) ** order)
        elif kind == "gaussian":
            mask = torch.exp(-d2 / (2.0 * d_s**2))
        else:
            mask = (d2 <= d_s**2).to(torch.float64)
    return mask.to(dtype=dtype, device=device).expand(tuple(shape))


def _frame_mask(lowpass: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Reshape a ``(..., F, H, W)`` mask with singleton leading dims to ``(F, 1, H, W)``."""
    frames, height, width = lowpass.shape[-3:]
    if any(s != 1 for s in lowpass.shape[:-3]):
        lowpass = lowpass.reshape(-1, frames, height, width)[0]
    if (frames, height, width) != (x.shape[-4], x.shape[-2], x.shape[-1]):
        raise ParameterError(
            "freeinit",
            f"filter (F, H, W) = {(frames, height, width)} does not match latents "
            f"{tuple(x.shape)} in the (frames, C, H, W) layout; build it with "
            "lowpass_filter((frames, H, W), ...)",
        )
    return lowpass.reshape(frames, 1, height, width)


def freeinit_noise(
    x0: torch.Tensor,
    z_init: torch.Tensor,
    fresh_noise: torch.Tensor,
    alphas_cumprod_T: float | torch.Tensor,
    lowpass: torch.Tensor,
) -> torch.Tensor:
    """New starting noise: low frequencies of diffused ``x0``, high ones of ``fresh_noise``.

    Args:
        x0: the previous iteration's clean latents, ``(..., frames, C, H, W)`` (A1111 layout).
        z_init: the noise that iteration started from, same shape (used to diffuse ``x0``).
        fresh_noise: new standard-normal noise for this iteration, same shape.
        alphas_cumprod_T: ``alphas_cumprod[T - 1]`` of the schedule in use (float or 0-d tensor).
        lowpass: mask whose last three dims are ``(frames, H, W)``, from :func:`lowpass_filter`.

    Returns:
        ``real(ifft(LPF * fft(sqrt(a) x0 + sqrt(1 - a) z_init) + (1 - LPF) * fft(fresh)))`` in
        ``x0``'s dtype; FFTs run in float32 (or float64 for float64 input) over frames, H and W.
    """
    if x0.dim() < 4 or z_init.shape != x0.shape or fresh_noise.shape != x0.shape:
        raise ParameterError(
            "freeinit", f"x0 {tuple(x0.shape)}, z_init {tuple(z_init.shape)} and fresh_noise "
            f"{tuple(fresh_noise.shape)} must share one (frames, C, H, W) shape",
        )
    alpha = float(alphas_cumprod_T)
    if not 0.0 <= alpha <= 1.0:
        raise ParameterError("freeinit", f"alphas_cumprod_T must be in [0, 1], got {alpha}")
    work = torch.promote_types(x0.dtype, torch.float32)
    mask = _frame_mask(lowpass, x0).to(device=x0.device, dtype=work)
    dims = (-4, -2, -1)
    diffused = math.sqrt(alpha) * x0.to(work) + math.sqrt(1.0 - alpha) * z_init.to(work)
    low = fft.fftshift(fft.fftn(diffused, dim=dims), dim=dims) * mask
    high = fft.fftshift(fft.fftn(fresh_noise.to(work), dim=dims), dim=dims) * (1.0 - mask)
    mixed = fft.ifftn(fft.ifftshift(low + high, dim=dims), dim=dims).real
    return mixed.to(x0.dtype)


class NoiseSource:
    """Stands in for the host's noise generator (A1111: ``p.rng``, anything with ``next()``).

    Hands out ``first`` (when given) as the initial noise instead of a draw, or the draw passed through
    ``transform`` (e.g. FreeNoise rescheduling), records what the initial noise was (``initial``), and
    delegates every later draw (ancestral / SDE noise) and every other attribute to the wrapped generator.
    """

    def __init__(self, rng: Any, first: torch.Tensor | None = None,
                 transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        self.rng, self.first, self.transform = rng, first, transform
        self.initial: torch.Tensor | None = None

    def next(self) -> torch.Tensor:
        if self.first is not None:
            out, self.first = self.first, None
        else:
            out = self.rng.next()
            if self.initial is None and self.transform is not None:
                out = self.transform(out)
        if self.initial is None:
            self.initial = out
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self.rng, name)


@dataclass(frozen=True)
class FreeInitConfig:
    """``passes``: sampling passes in total (>= 1); the filter as :func:`lowpass_filter` takes it;
    ``seed``: seeds the fresh high-frequency noise of pass ``k`` as ``seed + 7919 * k``;
    ``alpha_T``: ``alphas_cumprod[T - 1]`` of the schedule in use."""

    passes: int
    filter: str
    d_s: float
    d_t: float
    seed: int
    alpha_T: float

    @classmethod
    def of(cls, params: AnimateDiffParams, seed: int, alphas_cumprod: torch.Tensor) -> FreeInitConfig:
        """The configuration of a request's FreeInit fields, seeded by the video's seed."""
        return cls(passes=params.freeinit_iters, filter=str(params.freeinit_filter.value), d_s=params.freeinit_ds,
                   d_t=params.freeinit_dt, seed=int(seed), alpha_T=float(alphas_cumprod[-1]))


def freeinit_sample(sample: Callable[[NoiseSource], torch.Tensor], rng: Any, config: FreeInitConfig,
                    interrupted: Callable[[], bool] = lambda: False) -> torch.Tensor:
    """Run FreeInit: ``sample(source)`` once per pass, each pass starting from the previous result.

    ``sample`` must draw its initial noise from ``source.next()`` (the host installs ``source`` as its
    generator for that pass) and return the clean latents ``(frames, C, H, W)``. Pass ``k >= 1``
    starts from :func:`freeinit_noise` of pass ``k - 1``'s result and initial noise. Stops early
    (returning the latest result) when ``interrupted()`` says so or a pass drew no noise.
    """
    source = NoiseSource(rng)
    samples = sample(source)
    for iteration in range(1, config.passes):
        z = source.initial
        if interrupted() or z is None:
            break
        frames, _, height, width = z.shape[-4:]
        lowpass = lowpass_filter((frames, height, width), config.filter, d_s=config.d_s, d_t=config.d_t,
                                 device=z.device)
        generator = torch.Generator(device="cpu").manual_seed(config.seed + 7919 * iteration)
        fresh = torch.randn(tuple(z.shape), generator=generator).to(z)
        source = NoiseSource(rng, first=freeinit_noise(samples.to(z), z, fresh, config.alpha_T, lowpass))
        samples = sample(source)
    return samples
