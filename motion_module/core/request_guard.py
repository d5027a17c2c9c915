"""A failed AnimateDiff request leaves WebUI and every other extension as they were (WebUI-free: ``p`` duck-typed).

WebUI runs, in this order: every script's ``before_process`` (AnimateDiff plans the request there and finds any
refusal), ``p.setup_prompts()``, every script's ``process`` (ControlNet hooks the UNet and binds a Control-LoRA
into it), then ``p.sample`` per batch, then every script's ``postprocess`` (ControlNet undoes its changes). An
exception anywhere in between skips ``postprocess``, so what other scripts changed in ``process`` stays changed:
every later generation then differs. :func:`guard` closes both gaps on one request ``p``:

* a refusal found before sampling is raised from ``p.setup_prompts``: no other script's ``process`` has run,
  so nothing needs undoing;
* an exception out of sampling (AnimateDiff's own, an out-of-memory, another extension's bug) first ends the
  request through the cleanup a finished request gets (the other scripts' ``postprocess``), then propagates.

The wrappers are instance attributes of that ``p`` only. A copy of it (another extension's nested generation
made with ``copy.copy``) would carry them along, bound to the original: :func:`drop_copied_guard` removes them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from motion_module.core.patch import Changes

logger = logging.getLogger("animatediff")

GUARD_ATTR = "animatediff_guard"  # id() of the p the wrappers below belong to
_WRAPPED = ("setup_prompts", "sample", "close")


def drop_copied_guard(p: Any) -> bool:
    """Remove the wrappers a copy of a guarded request inherited (they act on the original). True if removed."""
    owner = vars(p).get(GUARD_ATTR)
    if owner is None or owner == id(p):
        return False
    for name in (*_WRAPPED, GUARD_ATTR):
        vars(p).pop(name, None)
    return True


def guard(p: Any, edits: Changes, refusal: Callable[[], BaseException | None],
          sample: Callable[[Callable[[], Any]], Any], failed: Callable[[BaseException], None]) -> None:
    """Wrap ``p.setup_prompts``, ``p.sample`` and ``p.close`` of request ``p`` (once), through ``edits``.

    ``refusal()``: the error found before sampling, or None; raised from ``p.setup_prompts`` and, if it is set
    later, from ``p.sample``. ``sample(call)``: runs the batch, ``call()`` being WebUI's own ``p.sample`` with
    the arguments it got. ``failed(error)``: called with any exception out of ``p.sample`` before it
    propagates: record it and end the request as a finished one is ended. ``p.close()`` undoes ``edits``: every
    edit of ``p``, these wrappers included (:func:`undo_on_close`).
    """
    drop_copied_guard(p)
    if vars(p).get(GUARD_ATTR) == id(p):
        return
    setup_prompts, original_sample = p.setup_prompts, p.sample

    def guarded_setup_prompts(*args: Any, **kwargs: Any) -> Any:
        error = refusal()
        if error is not None:
            raise error
        return setup_prompts(*args, **kwargs)

    def guarded_sample(*args: Any, **kwargs: Any) -> Any:
        try:
            error = refusal()
            if error is not None:
                raise error
            return sample(lambda: original_sample(*args, **kwargs))
        except BaseException as error:
            try:
                failed(error)
            except Exception:  # the cleanup's own failure must not hide the error that ended the request
                logger.exception("AnimateDiff: ending the failed request")
            raise

    for name, wrapper in (("setup_prompts", guarded_setup_prompts), ("sample", guarded_sample)):
        edits.set_attribute(p, name, wrapper)
    undo_on_close(p, edits)
    edits.set_attribute(p, GUARD_ATTR, id(p))


def undo_on_close(p: Any, edits: Changes) -> None:
    """``p.close()`` (WebUI calls it when the request is over, whatever happened) first undoes ``edits``, newest
    first and this wrapper included, then closes ``p`` as before. Owners stacked this way (the img2img Batch tab's
    set-up, then the request's own edits) are undone in reverse order of their making."""
    close = p.close

    def closing(*args: Any, **kwargs: Any) -> Any:
        try:
            edits.undo()
        except Exception:  # the request is over: WebUI's own close must still run
            logger.exception("AnimateDiff: undoing the request's edits of p")
        return close(*args, **kwargs)

    edits.set_attribute(p, "close", closing)


__all__ = ["GUARD_ATTR", "drop_copied_guard", "guard", "undo_on_close"]
