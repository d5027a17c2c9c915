"""The owner of every change made to the host model, and of undoing it exactly.

Everything AnimateDiff changes in WebUI's model goes through one ``ExitStack`` here, entered in a fixed
order and undone in reverse (LIFO), on normal exit, on an ``Exception`` and on a ``BaseException``
(A1111's interrupt, ``KeyboardInterrupt``):

1. motion modules inserted into the UNet's blocks (``injection.insert``);
2. for V1/HotShot, the cross-frame GroupNorm on the UNet's own ``GroupNorm32`` instances;
3. the family's beta schedule on the object that owns ``alphas_cumprod`` (and
   ``alphas_cumprod_original``, which A1111 >= 1.8 re-applies before every batch).

Nothing is monkey-patched on a class; only per-instance state is touched, and it is put back as the
very same objects.
"""

from __future__ import annotations

import types
import weakref
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from .injection import FrameState, insert, plan_sites
from .model import MotionModule

_ACTIVE: weakref.WeakSet[nn.Module] = weakref.WeakSet()
_MISSING = object()


@dataclass(frozen=True)
class Host:
    """What the engine needs from the host, passed in rather than imported.

    ``unet``: the ldm/sgm ``UNetModel``. ``schedule_owner``: the object with ``alphas_cumprod`` (A1111: the
    ``sd_model``), or None to leave the schedule alone. ``groupnorm_cls``: the UNet's GroupNorm class that
    gets the cross-frame statistics for V1/HotShot (default: classes named ``GroupNorm32``).
    """

    unet: nn.Module
    schedule_owner: Any = None
    groupnorm_cls: type[nn.Module] | None = None


class Injection:
    """Handle yielded by :func:`injected`: set ``num_frames`` before each UNet call whose rows differ."""

    def __init__(self, mm: MotionModule, state: FrameState, sites: list[str]) -> None:
        self.motion_module = mm
        self.spec = mm.spec
        self.sites = sites
        self._state = state

    @property
    def num_frames(self) -> int:
        return self._state.num_frames

    @num_frames.setter
    def num_frames(self, value: int) -> None:
        self._state.num_frames = value

    def set_frames(self, value: int) -> None:
        """Callable form of the setter (for ``sampling.windowed_denoise(set_frames=...)``)."""
        self._state.num_frames = value


@contextmanager
def swap_attributes(obj: Any, **values: Any) -> Iterator[None]:
    """Set attributes for the duration of the block; put back the very same objects (or absence)."""
    old = {name: obj.__dict__.get(name, _MISSING) if hasattr(obj, "__dict__") else getattr(obj, name)
           for name in values}
    try:
        for name, value in values.items():
            setattr(obj, name, value)
        yield
    finally:
        for name, value in old.items():
            if value is _MISSING:
                try:
                    delattr(obj, name)
                except AttributeError:
                    pass
            else:
                setattr(obj, name, value)


def _cross_frame_forward(state: FrameState) -> Any:
    def forward(self: nn.GroupNorm, x: Tensor) -> Tensor:
        frames = state.num_frames
        rows = x.shape[0]
        if frames <= 1 or rows % frames:
            return F.group_norm(x.float(), self.num_groups, self.weight, self.bias, self.eps).type(x.dtype)
        # (B*F, C, ...) -> (B, C, F, ...): statistics pooled over the frames of each video.
        video = x.float().reshape(rows // frames, frames, *x.shape[1:]).transpose(1, 2)
        out = F.group_norm(video, self.num_groups, self.weight, self.bias, self.eps)
        return out.transpose(1, 2).reshape(x.shape).type(x.dtype)

    return forward


@contextmanager
def cross_frame_groupnorm(unet: nn.Module, state: FrameState,
                          groupnorm_cls: type[nn.Module] | None = None) -> Iterator[int]:
    """Give the UNet's own GroupNorm32 instances per-video statistics (``groups = rows // frames``).

    Only the host's GroupNorm32 class is touched (ldm: ResBlocks and the output norm); the plain
    ``nn.GroupNorm`` of SpatialTransformers stays per frame, as in AnimateDiff's UNet3D.
    """
    targets = [m for m in unet.modules()
               if (type(m) is groupnorm_cls if groupnorm_cls else type(m).__name__ == "GroupNorm32")]
    forward = _cross_frame_forward(state)
    patched: list[nn.Module] = []
    try:
        for module in targets:
            if "forward" in module.__dict__:
                raise RuntimeError(f"{type(module).__name__} instance already has a patched forward")
            object.__setattr__(module, "forward", types.MethodType(forward, module))
            patched.append(module)
        yield len(patched)
    finally:
        for module in patched:
            del module.__dict__["forward"]


def _prepare(mm: MotionModule, unet: nn.Module) -> None:
    param = next(unet.parameters())
    mm.to(device=param.device, dtype=param.dtype)


@contextmanager
def injected(unet: nn.Module, motion_module: MotionModule, num_frames: int,
             *, groupnorm_cls: type[nn.Module] | None = None) -> Iterator[Injection]:
    """Insert ``motion_module`` into ``unet`` for the duration of the block; restore it exactly on exit.

    Every UNet call inside the block must stack whole videos of ``handle.num_frames`` consecutive rows,
    ``x: (B*F, C, H, W)``. Raises IncompatibleModelError when the module does not fit the UNet and
    RuntimeError when this UNet is already injected.
    """
    if unet in _ACTIVE:
        raise RuntimeError("motion modules are already injected into this UNet; leave that block first")
    sites = plan_sites(unet, motion_module)
    state = FrameState(num_frames, motion_module.spec.max_frames)
    _prepare(motion_module, unet)
    with ExitStack() as stack:
        _ACTIVE.add(unet)
        stack.callback(_ACTIVE.discard, unet)
        stack.callback(insert(sites, motion_module, state))
        if motion_module.spec.cross_frame_groupnorm:
            stack.enter_context(cross_frame_groupnorm(unet, state, groupnorm_cls))
        yield Injection(motion_module, state, [site.name for site in sites])


def schedule_tensor(alphas_cumprod: Tensor, like: Tensor) -> Tensor:
    """``alphas_cumprod`` on the device and in the dtype of the host's current tensor."""
    return alphas_cumprod.to(device=like.device, dtype=like.dtype)


@contextmanager
def animatediff_patch(host: Host, motion_module: MotionModule, num_frames: int,
                      alphas_cumprod: Tensor | None = None) -> Iterator[Injection]:
    """All host changes of one AnimateDiff run: modules, GroupNorm, beta schedule; undone in reverse.

    ``alphas_cumprod`` (length T, e.g. from ``schedules.alphas_cumprod``) is set on both
    ``alphas_cumprod`` and, when present, ``alphas_cumprod_original`` of ``host.schedule_owner``.
    """
    with ExitStack() as stack:
        handle = stack.enter_context(injected(host.unet, motion_module, num_frames,
                                              groupnorm_cls=host.groupnorm_cls))
        owner = host.schedule_owner
        if alphas_cumprod is not None and owner is not None:
            current = owner.alphas_cumprod
            new = schedule_tensor(alphas_cumprod, current)
            fields = {"alphas_cumprod": new}
            if getattr(owner, "alphas_cumprod_original", None) is not None:
                original = owner.alphas_cumprod_original
                fields["alphas_cumprod_original"] = schedule_tensor(alphas_cumprod, original)
            stack.enter_context(_swap_schedule(owner, fields))
        yield handle


@contextmanager
def _swap_schedule(owner: Any, fields: dict[str, Tensor]) -> Iterator[None]:
    """Swap schedule tensors; nn.Module buffers are swapped in ``_buffers`` so they stay buffers."""
    if isinstance(owner, nn.Module):
        buffers = {k: v for k, v in fields.items() if k in owner._buffers}
        plain = {k: v for k, v in fields.items() if k not in owner._buffers}
        old = {k: owner._buffers[k] for k in buffers}
        try:
            owner._buffers.update(buffers)
            with swap_attributes(owner, **plain):
                yield
        finally:
            owner._buffers.update(old)
    else:
        with swap_attributes(owner, **fields):
            yield


__all__ = ["Host", "Injection", "animatediff_patch", "cross_frame_groupnorm", "injected", "swap_attributes"]
