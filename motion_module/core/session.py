"""One AnimateDiff request, from WebUI's first hook to its last: planned once, then only asked.

A host adapter (``scripts/animatediff.py``) makes one call per hook, with the host's :class:`HostAdapter`
(``animatediff_hosts``: A1111 1.10 or Forge):

* ``before_process`` -> :func:`start`: parse the arguments (``params.from_script_args``, the X/Y/Z cell's values),
  read the host's facts (:class:`HostFacts`), plan once (module, frames, context, windows, keyframes, motion scale,
  video sources: :func:`run.prepare_request`) and set the request up in ``p`` (frames as the batch, per-frame
  prompts, the infotext). Every edit of ``p`` goes through the request's owner of changes (:attr:`Request.edits`,
  undone when WebUI calls ``p.close()``), and ``p`` is guarded (``request_guard``): a refusal is raised before any
  other script's ``process()``, a failure in sampling ends the request as a finished one is ended.
* ``p.sample`` (through the guard) -> :meth:`Request.sample`: the host's model patch (motion modules, schedule,
  motion LoRAs; undone when sampling ends), img2img latents, FreeNoise, FreeInit.
* ``on_cfg_denoiser`` -> :func:`on_cfg_denoiser`: per sampler call, the host's windowed model and per-frame conds.
* ``process_before_every_sampling`` (Forge) -> :func:`before_every_sampling`.
* ``postprocess`` -> :func:`postprocess`: the videos (``publish``).

Nothing here imports a WebUI: ``p`` is duck-typed, and what differs between hosts is asked of the adapter.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from torch import Tensor

from motion_module.control.controlnet import VideoToVideo
from motion_module.core import nesting
from motion_module.core.freeinit import FreeInitConfig, freeinit_sample
from motion_module.core.freenoise import noise_source
from motion_module.core.model import MotionModule
from motion_module.core.patch import Changes, HostPatch
from motion_module.core.request_guard import drop_copied_guard, guard
from motion_module.core.run import HostState, RunPlan, check_host, prepare_request
from motion_module.params.fields import XYZ_ATTRIBUTE
from motion_module.params.infotext import INFOTEXT_KEY
from motion_module.params.request import AnimateDiffParams, from_script_args, selectable_script_runs
from motion_module.video.publish import VideoJob, publish_videos, report

logger = logging.getLogger("animatediff")
STATE_ATTR = "animatediff_run"  # the request on its p (read by sd-webui-controlnet through animatediff_utils)


@dataclass(frozen=True)
class HostFacts:
    """What the host tells a request before it is planned (read once, from ``p`` and the loaded model)."""

    state: HostState
    prompt: str
    n_iter: int
    steps: int
    cfg_scale: float
    sampler: str
    scheduler: str
    base: str  # "sd15" or "sdxl"
    channels: tuple[int, ...]
    model_root: Path
    device: Any = "cpu"
    dtype: Any = None
    fp8_storage: object = None
    cached: bool = True  # keep loaded modules between requests
    max_rows: int | None = None  # the most latent rows per UNet call (Settings), or None


class HostAdapter(Protocol):
    """What differs between the hosts (``animatediff_hosts``). ``p`` is the host's request object."""

    def task(self) -> object:
        """The host's current task (nested generations run inside one: ``nesting``)."""

    def facts(self, p: Any) -> HostFacts:
        """Read the request and the loaded model (Forge loads the checkpoint here)."""

    def video_input(self, p: Any, params: AnimateDiffParams, edits: Changes) -> VideoToVideo:
        """ControlNet units, video source and img2img batch frames (``p``'s edits through ``edits``)."""

    def model_patch(self, p: Any, request: Request) -> AbstractContextManager[HostPatch]:
        """The one owner of this sampling's host changes (motion modules, schedule, motion LoRAs)."""

    def prepare_sampling(self, p: Any, request: Request, patch: HostPatch) -> None:
        """Changes before the sampler runs (img2img: its sampler, the init latents), through ``patch``."""

    def on_denoiser(self, denoiser: Any, request: Request) -> None:
        """Per sampler call: run the host's model over the request's windows (:meth:`Request.denoise`)."""

    def before_every_sampling(self, p: Any, request: Request) -> None:
        """Forge: patch this sampling's UNet; A1111: nothing."""

    def end_failed(self, p: Any) -> None:
        """End a failed request as a finished one ends (the other scripts' postprocess)."""

    def video_job(self, p: Any, request: Request) -> VideoJob:
        """Where and how the videos of ``request`` are written (the host's settings and folders)."""

    def interrupted(self) -> bool:
        """The user pressed Interrupt."""


@dataclass
class Request:
    """Everything one AnimateDiff request needs, attached to its ``p`` (``STATE_ATTR``)."""

    params: AnimateDiffParams
    host: HostAdapter
    edits: Changes = field(default_factory=Changes)  # every edit of p, undone at p.close()
    facts: HostFacts | None = None
    plan: RunPlan | None = None
    module: MotionModule | None = None
    original_prompt: str | None = None
    error: BaseException | None = None
    patch: HostPatch | None = None
    v2v: VideoToVideo = field(default_factory=lambda: VideoToVideo({}, 0))
    notes: list[str] = field(default_factory=list)
    step: int = 0  # the sampler's step of the call in progress

    # ----- before_process: plan once ----------------------------------------------------------------
    def prepare(self, p: Any) -> None:
        """Plan the request and set it up in ``p``; an error is the request's refusal."""
        facts = self.facts = self.host.facts(p)
        check_host(facts.state, self.params)
        self.v2v = self.host.video_input(p, self.params, self.edits)
        if self.v2v.frames:
            self.params = self.params.replace_field("video_length", self.v2v.frames)
        self.notes += self.v2v.notes
        ready = prepare_request(
            self.params, prompt=facts.prompt, n_iter=facts.n_iter, img2img=facts.state.img2img, device=facts.device,
            base=facts.base, cached=facts.cached, channels=facts.channels, model_root=facts.model_root,
            scheduler=facts.scheduler, steps=facts.steps, cfg_scale=facts.cfg_scale, dtype=facts.dtype,
            sampler=facts.sampler, fp8_storage=facts.fp8_storage)
        self.module, self.plan = ready.module, ready.plan
        edit = self.edits.set_attribute
        edit(p, "batch_size", ready.plan.frames)
        if ready.prompts is not None:
            self.original_prompt = facts.prompt
            edit(p, "prompt", ready.prompts)
        edit(p, "do_not_save_grid", True)  # frames are saved by us, per video
        edit(p, "do_not_save_samples", True)
        self.edits.set_item(p.extra_generation_params, INFOTEXT_KEY, ready.infotext)
        self.notes += ready.notes  # the engine logged them

    # ----- p.sample: inside the host's model patch --------------------------------------------------
    def sample(self, p: Any, call: Callable[[], Any]) -> Any:
        """WebUI's sampling ``call()`` with the motion modules in the model, and everything it needs."""
        with self.host.model_patch(p, self) as patch:
            self.patch = patch
            try:
                self.host.prepare_sampling(p, self, patch)
                plan = self.planned
                if self.params.freenoise:  # the first draw of p.rng is the initial noise (txt2img and img2img)
                    patch.set_attribute(p, "rng", noise_source(p.rng, plan.context, plan.overlap, int(p.seeds[0])))
                if self.params.freeinit_enable:
                    return self.raising(lambda: self._freeinit(p, patch, call))
                return self.raising(call)
            finally:
                self.patch = None

    @property
    def planned(self) -> RunPlan:
        assert self.plan is not None, "the request was not planned"
        return self.plan

    def raising(self, call: Callable[[], Any]) -> Any:
        """``call()``; an error a hook recorded (WebUI swallows hook errors) is raised in any case, before whatever
        failed after it (a refusal found in a hook, then another script's failure on the unrefused request)."""
        try:
            result = call()
        except Exception as error:
            if self.error is not None and self.error is not error:
                raise self.error from error
            raise
        if self.error is not None:
            raise self.error
        return result

    def _freeinit(self, p: Any, patch: HostPatch, call: Callable[[], Any]) -> Any:
        config = FreeInitConfig.of(self.params, p.seeds[0], self.planned.schedule.alphas_cumprod())

        def one_pass(source: Any) -> Any:
            patch.set_attribute(p, "rng", source)
            return call()

        return freeinit_sample(one_pass, p.rng, config, interrupted=self.host.interrupted)

    def denoise(self, unet: Callable[[Tensor, Any, Any], Tensor], x: Tensor, sigma: Any, cond: Any,
                on_frames: Callable[[list[int]], None] | None = None) -> Tensor:
        """One sampler call over the request's windows, wired to the motion modules of the patch in progress."""
        if self.error is not None:
            raise self.error
        assert self.patch is not None and self.facts is not None, "denoise runs inside Request.sample"
        return self.planned.denoise(unet, x, sigma, cond, step=self.step, frames=self.patch.injection,
                                    max_rows=self.facts.max_rows, on_frames=on_frames)

    def record(self, error: BaseException) -> None:
        """An error in a hook WebUI would swallow: raised from ``p.sample`` instead."""
        logger.error("AnimateDiff: %s", error)
        self.error = self.error or error

    # ----- postprocess ------------------------------------------------------------------------------
    def publish(self, p: Any, processed: Any) -> None:
        """The videos of the finished request in place of its frames (a failure is reported, the frames stay)."""
        start, out = processed.index_of_first_image, None
        try:
            job = self.host.video_job(p, self)
            out = publish_videos(processed.images[start:], processed.infotexts[start:], processed.all_seeds,
                                 p.all_prompts, job, for_api=job_for_api(p))
        except Exception as error:
            logger.exception("AnimateDiff: making the videos failed")
            self.notes.append(f"AnimateDiff: making the videos failed: {error}")
        report(processed, out, self.notes, self.original_prompt)


def job_for_api(p: Any) -> bool:
    """The request came over the API and is not an X/Y/Z plot's (whose cells are images)."""
    return bool(getattr(p, "is_api", False)) and not selectable_script_runs(p.script_args)


def request_of(p: Any) -> Request | None:
    """The AnimateDiff request on ``p``, if any."""
    return getattr(p, STATE_ATTR, None)


# ----- the hooks: one call each from the adapter -----------------------------------------------------
def start(p: Any, args: Sequence[Any], host: HostAdapter) -> Request | None:
    """``before_process``: the request of ``p`` (None: AnimateDiff is off, or ``p`` is nested and runs plain)."""
    drop_copied_guard(p)  # a copy of an AnimateDiff request (nested generation) runs as WebUI made it
    if args and args[0] is False:  # the UI/API default: AnimateDiff off, nothing else to read
        return None
    request = Request(AnimateDiffParams(), host)
    try:
        request.params = from_script_args(args)
        for name, value in (getattr(p, XYZ_ATTRIBUTE, None) or {}).items():
            request.params = request.params.replace_field(name, value)
        if not request.params.enable or not nesting.REQUESTS.begin(p, host.task()):  # inner: plain
            return None
        request.prepare(p)
    except Exception as error:  # WebUI swallows hook errors: raised before other scripts' process() instead
        request.record(error)
        nesting.REQUESTS.end(p)  # refused: never the request others are nested in
    request.edits.set_attribute(p, STATE_ATTR, request)
    _guard(p, request)
    return request


def _guard(p: Any, request: Request) -> None:
    def failed(error: BaseException) -> None:
        request.error = request.error or error
        nesting.REQUESTS.end(p)  # over: later requests are not nested in it
        request.host.end_failed(p)  # the cleanup a finished request gets (ControlNet's restore)

    guard(p, request.edits, lambda: request.error, lambda call: request.sample(p, call), failed)


def on_cfg_denoiser(params: Any) -> None:
    """Per sampler call: the host's windowed model (once per inner model), per-frame travel conds."""
    denoiser = params.denoiser
    request = request_of(getattr(denoiser, "p", None))
    if request is None or request.patch is None or request.plan is None:
        return
    try:
        request.step = int(getattr(denoiser, "step", 0))
        request.host.on_denoiser(denoiser, request)
        params.text_cond = request.plan.frame_conds(params.text_cond)
    except Exception as error:  # raised from the inner model / p.sample, not swallowed by WebUI
        logger.exception("AnimateDiff")
        request.error = error


def before_every_sampling(p: Any) -> None:
    """Forge's ``process_before_every_sampling``: the host patches this sampling's UNet."""
    request = request_of(p)
    if request is not None and request.patch is not None and request.plan is not None:
        try:
            request.host.before_every_sampling(p, request)
        except Exception as error:  # Forge swallows hook errors: raised from p.sample instead
            request.record(error)


def postprocess(p: Any, processed: Any) -> None:
    """``postprocess``: the videos, for the request ``p`` itself (not a copy another extension hands over)."""
    request = request_of(p)
    if request is None or not nesting.REQUESTS.end(p) or request.plan is None or request.error is not None:
        return  # end(p) False: a copy of the request (ADetailer hands one to every script) or an inner p
    request.publish(p, processed)


__all__ = ["STATE_ATTR", "HostAdapter", "HostFacts", "Request", "before_every_sampling", "on_cfg_denoiser",
           "postprocess", "request_of", "start"]
