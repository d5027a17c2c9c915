"""Instance-level ``forward`` wrappers on host modules, chained over other extensions' and undone exactly.

Used by the patch (the sampler's inner model) and by the injection (the UNet's spatial layers, which run
over chunks of frames under motion-module windows). Nothing is set on a class.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("animatediff")
_MISSING = object()
Forward = Callable[..., Any]


def wrap_instance_forward(module: Any, make: Callable[[Forward], Forward]) -> Callable[[], None]:
    """Give ``module`` the instance-level forward ``make(current_forward)``; returns the undo function.

    ``current_forward`` is what ``module.forward`` is now: the class's method, or a wrapper another
    extension installed on the instance (ours then runs on top of it and calls it: chained). The undo puts
    the previous instance attribute (or its absence) back exactly. If yet another wrapper was installed on
    top of ours meanwhile, it is left in place and ours turns into a pass-through to ``current_forward``,
    so neither extension is cut out.
    """
    previous = module.__dict__.get("forward", _MISSING)
    inner: Forward = module.forward
    ours = make(inner)
    active = True

    def forward(*args: Any, **kwargs: Any) -> Any:
        return ours(*args, **kwargs) if active else inner(*args, **kwargs)

    def undo() -> None:
        nonlocal active
        active = False
        if module.__dict__.get("forward") is not forward:
            logger.warning("AnimateDiff: %s.forward was wrapped again by another extension during the "
                           "run; its wrapper stays and AnimateDiff's now passes through", type(module).__name__)
        elif previous is _MISSING:
            del module.__dict__["forward"]
        else:
            module.__dict__["forward"] = previous

    object.__setattr__(module, "forward", forward)
    return undo


__all__ = ["Forward", "wrap_instance_forward"]
