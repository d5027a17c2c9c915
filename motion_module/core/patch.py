"""The owner of every change made to the host, and of undoing it exactly.

Everything AnimateDiff changes in the host (WebUI's model, sampler and processing object) goes through
the one ``ExitStack`` of :func:`animatediff_patch`, entered in order and undone in reverse (LIFO) on
normal exit, on an ``Exception`` and on a ``BaseException`` (A1111's interrupt, ``KeyboardInterrupt``):

1. motion modules inserted into the UNet's blocks, and for V1/HotShot the cross-frame GroupNorm
   (``injection.injected``); then the motion LoRAs merged into the module's weights (``lora.applied_motion_loras``:
   new weight objects for the run, the module's own put back on exit);
2. the family's beta schedule on the object that owns ``alphas_cumprod`` (and
   ``alphas_cumprod_original``, which A1111 >= 1.8 re-applies before every batch);
3. whatever the adapter adds while the run goes on, through the yielded :class:`HostPatch`:
   attributes set on host objects (``p.rng``, ``p.sampler``, ``p.init_latent``...) with
   :meth:`HostPatch.set_attribute`, and instance-level ``forward`` wrappers (the sampler's inner
   model) with :meth:`HostPatch.wrap_forward`, which chains over a wrapper another extension put there.

Nothing is monkey-patched on a class; only per-instance state is touched, and it is put back as the
very same objects (or their absence).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from torch import Tensor, nn

from motion_module.core.injection import Injection, injected
from motion_module.core.instance_forward import Forward, wrap_instance_forward
from motion_module.core.model import MotionModule
from motion_module.files.lora import MotionLora, applied_motion_loras

_MISSING = object()
T = TypeVar("T")


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


class Changes:
    """An owner of host changes: each is pushed on one ``ExitStack`` and undone, in reverse order, by :meth:`undo`
    (or by the ``with`` block that made the stack). Calling a change method after that raises RuntimeError.

    The request's own edits of ``p`` (``session.Request.edits``, undone when ``p.close()`` runs) and the changes of
    one sampling (:class:`HostPatch`) are both kept this way: no host object is changed any other way.
    """

    def __init__(self, stack: ExitStack | None = None) -> None:
        self._stack: ExitStack | None = ExitStack() if stack is None else stack
        self._wrapped: weakref.WeakSet[Any] = weakref.WeakSet()

    def _open(self) -> ExitStack:
        if self._stack is None:
            raise RuntimeError("this AnimateDiff patch has ended; host changes must be made inside it")
        return self._stack

    @property
    def active(self) -> bool:
        """Changes are still accepted (not yet undone)."""
        return self._stack is not None

    def close(self) -> None:
        """No change is accepted after this (its stack is undone by its owner)."""
        self._stack = None

    def undo(self) -> None:
        """Undo every change, newest first; no change is accepted after this. Idempotent."""
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.close()

    def enter(self, context: AbstractContextManager[T]) -> T:
        """Enter a host-specific context manager; it exits with the others, in LIFO order."""
        return self._open().enter_context(context)

    def set_attribute(self, obj: Any, name: str, value: Any) -> None:
        """``setattr(obj, name, value)`` until the changes are undone; then the previous object (or absence)."""
        self.enter(swap_attributes(obj, **{name: value}))

    def set_item(self, mapping: Any, key: Any, value: Any) -> None:
        """``mapping[key] = value`` until the changes are undone; then the previous value (or no such key)."""
        old = mapping.get(key, _MISSING)
        mapping[key] = value
        self._open().callback(_put_back, mapping, key, old)

    def wrap_forward(self, module: Any, make: Callable[[Forward], Forward]) -> bool:
        """Give ``module`` the instance-level forward ``make(current_forward)`` until the changes are undone
        (:func:`instance_forward.wrap_instance_forward`: chained over another extension's wrapper and put
        back exactly). Returns False (and changes nothing) when this owner already wrapped ``module``.
        """
        stack = self._open()
        if module in self._wrapped:
            return False
        stack.callback(wrap_instance_forward(module, make))
        self._wrapped.add(module)
        return True


def _put_back(mapping: Any, key: Any, old: Any) -> None:
    if old is _MISSING:
        mapping.pop(key, None)
    else:
        mapping[key] = old


class HostPatch(Changes):
    """Handle of one :func:`animatediff_patch` block: the injection, plus every further host change.

    Each change is pushed on the block's stack and undone, in reverse order, when the block ends.
    Calling any method after the block has ended raises RuntimeError.
    """

    def __init__(self, stack: ExitStack, injection: Injection) -> None:
        super().__init__(stack)
        self.injection = injection


def schedule_tensor(alphas_cumprod: Tensor, like: Tensor) -> Tensor:
    """``alphas_cumprod`` on the device and in the dtype of the host's current tensor."""
    return alphas_cumprod.to(device=like.device, dtype=like.dtype)


@contextmanager
def animatediff_patch(host: Host, motion_module: MotionModule, window: int,
                      alphas_cumprod: Tensor | None = None, motion_scale: float | Sequence[float] = 1.0,
                      motion_loras: Sequence[tuple[MotionLora, float]] = ()) -> Iterator[HostPatch]:
    """All host changes of one AnimateDiff run; undone in reverse order when the block ends.

    ``window``: frames per video of the first UNet call (the context length; the yielded handle's
    ``injection.set_window`` changes it per call). ``alphas_cumprod`` (length T, e.g. from
    ``schedules.alphas_cumprod``) is set on both ``alphas_cumprod`` and, when present,
    ``alphas_cumprod_original`` of ``host.schedule_owner``. ``motion_scale``: see
    ``Injection.set_motion_scale``. ``motion_loras``: ``(lora, strength)`` pairs merged into the module after
    it is inserted (and moved to the UNet's device); one that does not fit raises IncompatibleModelError.
    """
    with ExitStack() as stack:
        injection = stack.enter_context(injected(host.unet, motion_module, window,
                                                 groupnorm_cls=host.groupnorm_cls))
        injection.set_motion_scale(motion_scale)
        stack.enter_context(applied_motion_loras(motion_module, motion_loras))
        owner = host.schedule_owner
        if alphas_cumprod is not None and owner is not None:
            fields = {"alphas_cumprod": schedule_tensor(alphas_cumprod, owner.alphas_cumprod)}
            if getattr(owner, "alphas_cumprod_original", None) is not None:
                fields["alphas_cumprod_original"] = schedule_tensor(alphas_cumprod, owner.alphas_cumprod_original)
            stack.enter_context(_swap_schedule(owner, fields))
        patch = HostPatch(stack, injection)
        stack.callback(patch.close)
        yield patch


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


__all__ = ["Changes", "Host", "HostPatch", "animatediff_patch", "schedule_tensor", "swap_attributes"]
