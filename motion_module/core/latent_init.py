"""img2gif latent initialisation: blend the encoded first (and optional last) image into noise.

For frame ``i`` of ``L`` (features.md §3.9)::

    a_i = max(0, 1 - i ** power / scale)                          # first-image weight
    b_i = max(0, 1 - (L - 1 - i) ** power_last / scale_last)      # last-image weight (if given)
    where a_i + b_i > 1: a_i, b_i = a_i / (a_i + b_i), b_i / (a_i + b_i)
    with a last image: a_0, b_0 = 1, 0 and a_{L-1}, b_{L-1} = 0, 1  (for L == 1 the last wins)
    init_i = a_i * first + b_i * last + (1 - a_i - b_i) * noise_i

The weight vectors always have exactly ``num_frames`` entries, whatever the context length
(the reference sized them by the video length but the latent batch by the context: ADW#213).
A1111 then adds its usual img2img noise for the denoising strength on top of ``init``.
"""

from __future__ import annotations

import torch

from motion_module.errors import ParameterError
from motion_module.params.request import AnimateDiffParams


def _check(field: str, value: float, *, positive: bool) -> float:
    number = float(value)
    if not number == number or (number <= 0 if positive else number < 0):
        bound = "> 0" if positive else ">= 0"
        raise ParameterError(field, f"must be {bound}, got {value!r}")
    return number


def _ramp(num_frames: int, power: float, scale: float, reverse: bool) -> torch.Tensor:
    distance = torch.arange(num_frames, dtype=torch.float64)
    if reverse:
        distance = distance.flip(0)
    return torch.clamp(1.0 - distance.pow(power) / scale, min=0.0)


def img2gif_weights(
    num_frames: int,
    power: float = 1.0,
    scale: float = 32.0,
    *,
    has_last: bool = False,
    power_last: float = 1.0,
    scale_last: float = 32.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights ``(a, b)`` of the first and last image, each float64 of shape ``(num_frames,)``.

    ``b`` is all zeros without a last image. See the module docstring for the formula.
    """
    if int(num_frames) != num_frames or num_frames < 1:
        raise ParameterError("num_frames", f"must be an integer >= 1, got {num_frames!r}")
    frames = int(num_frames)
    a = _ramp(frames, _check("latent_power", power, positive=False),
              _check("latent_scale", scale, positive=True), reverse=False)
    if not has_last:
        return a, torch.zeros(frames, dtype=torch.float64)
    b = _ramp(frames, _check("latent_power_last", power_last, positive=False),
              _check("latent_scale_last", scale_last, positive=True), reverse=True)
    total = a + b
    over = total > 1.0
    a = torch.where(over, a / total, a)
    b = torch.where(over, b / total, b)
    a[0], b[0] = 1.0, 0.0
    a[-1], b[-1] = 0.0, 1.0
    return a, b


def _as_frame(latent: torch.Tensor, name: str, shape: torch.Size) -> torch.Tensor:
    if latent.dim() == 4 and latent.shape[0] == 1:
        latent = latent[0]
    if latent.shape != shape:
        raise ParameterError(
            name, f"latent shape {tuple(latent.shape)} does not match the noise frames {tuple(shape)}; "
            "encode the image at the video's width and height",
        )
    return latent


def img2gif_init(
    first: torch.Tensor,
    noise: torch.Tensor,
    *,
    num_frames: int,
    power: float = 1.0,
    scale: float = 32.0,
    last: torch.Tensor | None = None,
    power_last: float = 1.0,
    scale_last: float = 32.0,
) -> torch.Tensor:
    """Initial latents ``(num_frames, C, H, W)`` blending ``first``/``last`` into ``noise``.

    Args:
        first: encoded first image, ``(C, H, W)`` or ``(1, C, H, W)``.
        noise: fresh standard-normal latents, ``(num_frames, C, H, W)``.
        num_frames: video length L (the weight vectors have exactly L entries).
        power, scale: shape of the first-image fade (defaults fade out linearly by frame 32).
        last: optional encoded last image, same shapes as ``first``.
        power_last, scale_last: shape of the last-image fade-in.

    Returns:
        Tensor with the dtype and device of ``noise``.
    """
    if noise.dim() != 4 or noise.shape[0] != num_frames:
        raise ParameterError(
            "num_frames", f"noise has shape {tuple(noise.shape)}; expected ({num_frames}, C, H, W), "
            "one noise latent per video frame",
        )
    a, b = img2gif_weights(num_frames, power, scale, has_last=last is not None,
                           power_last=power_last, scale_last=scale_last)
    work = torch.promote_types(noise.dtype, torch.float32)
    view = (num_frames, 1, 1, 1)
    a = a.to(device=noise.device, dtype=work).view(view)
    b = b.to(device=noise.device, dtype=work).view(view)
    start = _as_frame(first, "init_image", noise.shape[1:]).to(device=noise.device, dtype=work)
    result = a * start + (1.0 - a - b) * noise.to(work)
    if last is not None:
        end = _as_frame(last, "last_frame", noise.shape[1:]).to(device=noise.device, dtype=work)
        result = result + b * end
    return result.to(noise.dtype)


def img2gif_latents(init: torch.Tensor, params: AnimateDiffParams, *, seed: int,
                    last: torch.Tensor | None = None) -> torch.Tensor | None:
    """img2img's initial latents for one video, or None when ``init`` is not one latent per frame.

    ``init``: the host's encoded init latents ``(frames, C, H, W)`` (the init image repeated per frame);
    ``last``: the encoded last frame ``(C, H, W)`` or None. The noise is seeded by ``seed`` alone (CPU
    generator), so the result does not depend on the device. Fades follow ``params.latent_*``.
    """
    frames = params.frames
    if init.dim() != 4 or init.shape[0] != frames:
        return None
    generator = torch.Generator(device="cpu").manual_seed(int(seed) ^ 0x5EED)
    noise = torch.randn(tuple(init.shape), generator=generator).to(init)
    return img2gif_init(init[0], noise, num_frames=frames, power=params.latent_power, scale=params.latent_scale,
                        last=None if last is None else last.to(init), power_last=params.latent_power_last,
                        scale_last=params.latent_scale_last)
