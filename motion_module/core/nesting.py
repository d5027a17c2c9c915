"""Generations that other extensions run inside an AnimateDiff request are ordinary images.

ADetailer (and any extension like it) runs a whole second `process_images` from a hook of the request in
progress, e.g. one img2img per finished frame from `postprocess_image`, with a copy of the request's script
runner and script arguments, so AnimateDiff's arguments arrive there still enabled. Such an inner generation
must not become a video of its own (frames multiplied, motion modules inserted, a video written, refusals for
the inner settings): it is one image that goes back into the outer video's frames.

`Requests` knows which AnimateDiff request is in progress on each thread, from the adapter's
`before_process` to its `postprocess`. Any other `p` that asks for AnimateDiff meanwhile, in the same WebUI
task, is nested in it and runs without AnimateDiff (logged once per outer request). A `p` that carries an
inner marker another extension sets (`INNER_MARKERS`, ADetailer's ``_ad_inner``) is nested whatever is in
progress. A request that ended without `postprocess` (an error) is never taken for an outer one by the
next task's requests: the task key differs (the adapter passes WebUI's ``shared.state.time_start``).
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger("animatediff")
INNER_MARKERS = ("_ad_inner",)  # ADetailer sets it on the img2img `p` it runs for each finished image
NESTED_NOTE = ("AnimateDiff: another extension (e.g. ADetailer) runs a generation inside this AnimateDiff request; "
               "it runs as an ordinary image, without AnimateDiff")


@dataclass
class _Active:
    owner: Callable[[], Any]  # a weak reference where `p` allows one
    task: object
    logged: bool = False


def _reference(p: Any) -> Callable[[], Any]:
    try:
        return weakref.ref(p)
    except TypeError:  # a `p` without __weakref__: held until the next request on this thread replaces it
        return lambda: p


class Requests:
    """The AnimateDiff request in progress on each thread (see the module's docstring)."""

    def __init__(self) -> None:
        self._active: dict[int, _Active] = {}
        self._lock = threading.Lock()

    def begin(self, p: Any, task: object) -> bool:
        """``p`` asks for AnimateDiff in WebUI task ``task``. True: it is a request of its own, now the one in
        progress on this thread. False: it is nested in the request in progress (or marked inner by the
        extension that made it) and must run as an ordinary generation."""
        marked = any(getattr(p, name, False) is True for name in INNER_MARKERS)
        key = threading.get_ident()
        with self._lock:
            active = self._active.get(key)
            outer = active.owner() if active is not None and active.task == task else None
            if marked or (outer is not None and outer is not p):
                if active is None or not active.logged:
                    logger.warning(NESTED_NOTE)
                if active is not None:
                    active.logged = True
                return False
            self._active[key] = _Active(_reference(p), task)
            return True

    def end(self, p: Any) -> bool:
        """``p``'s request is over. True if ``p`` was the request in progress on this thread; False for anything
        else (a nested `p`, or a copy of the request that another extension hands to the hooks)."""
        key = threading.get_ident()
        with self._lock:
            active = self._active.get(key)
            if active is None or active.owner() is not p:
                return False
            del self._active[key]
            return True


REQUESTS = Requests()  # the process's one registry; WebUI runs one generation at a time per thread

__all__ = ["INNER_MARKERS", "NESTED_NOTE", "REQUESTS", "Requests"]
