"""Test-only WebUI extension (linked into the live tier's data dir, never shipped): an error raised from inside
sampling, as an out-of-memory or another extension's bug would raise it, for the requests that ask for it.

A request with the seed ``MARKER_SEED`` (the seed is not part of A1111's cond cache key, so a test can make an
ordinary request with the very same conds) gets, for its first batch, a forward pre-hook on the UNet that
raises ``torch.OutOfMemoryError`` at the UNet's second call (one step has run: every hook of ControlNet and
AnimateDiff is in place). The hook removes itself before it raises, so this extension leaves nothing behind.
"""

from typing import Any

import torch
from modules import scripts

MARKER_SEED = 424242
OutOfMemory = getattr(torch, "OutOfMemoryError", RuntimeError)


class RaiseInsideSampling(scripts.Script):
    def title(self) -> str:
        return "AnimateDiff test: raise inside sampling"

    def show(self, is_img2img: bool) -> Any:
        return scripts.AlwaysVisible

    def process_batch(self, p: Any, *args: Any, **kwargs: Any) -> None:
        if getattr(p, "seed", None) != MARKER_SEED:
            return
        unet = p.sd_model.model.diffusion_model
        calls = []

        def pre_hook(module: Any, inputs: Any) -> None:
            calls.append(1)
            if len(calls) >= 2:
                handle.remove()
                raise OutOfMemory("simulated out of memory inside sampling (test-only extension)")

        handle = unet.register_forward_pre_hook(pre_hook)
