"""Instance-level wrappers on host objects, chained over other extensions' and undone exactly.

Used by the patch (the sampler's inner model), by the injection (the UNet's spatial layers, which run over
chunks of frames under motion-module windows), both on ``forward``, and for the Lora extension's
``networks.load_network`` (``lora.wrap_lora_loader``). Nothing is set on a class.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("animatediff")
_MISSING = object()
Forward = Callable[..., Any]


def wrap_attribute(obj: Any, name: str, make: Callable[[Forward], Forward]) -> Callable[[], None]:
    """Give ``obj`` the instance attribute ``name = make(current)``; returns the undo function.

    ``current`` is what ``obj.<name>`` is now: a class's method, a module's function, or a wrapper another
    extension installed there (ours then runs on top of it and calls it: chained). The undo puts the previous
    instance attribute (the very same object, or its absence) back exactly; a second call does nothing. If
    yet another wrapper was installed on top of ours meanwhile, it is left in place and ours turns into a
    pass-through to ``current`` for good, so neither extension is cut out.
    """
    previous = obj.__dict__.get(name, _MISSING)
    inner: Forward = getattr(obj, name)
    ours = make(inner)
    active = True

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return ours(*args, **kwargs) if active else inner(*args, **kwargs)

    def undo() -> None:
        nonlocal active
        if not active:
            return
        active = False
        if obj.__dict__.get(name) is not wrapper:
            logger.warning("AnimateDiff: %s.%s was wrapped again by another extension; its wrapper stays and "
                           "AnimateDiff's now passes through", getattr(obj, "__name__", type(obj).__name__), name)
        elif previous is _MISSING:
            del obj.__dict__[name]
        else:
            obj.__dict__[name] = previous

    object.__setattr__(obj, name, wrapper)
    return undo


def wrap_instance_forward(module: Any, make: Callable[[Forward], Forward]) -> Callable[[], None]:
    """Give ``module`` the instance-level forward ``make(current_forward)``; returns the undo function
    (:func:`wrap_attribute` on ``forward``: chained over another extension's wrapper, put back exactly)."""
    return wrap_attribute(module, "forward", make)


__all__ = ["Forward", "wrap_attribute", "wrap_instance_forward"]
