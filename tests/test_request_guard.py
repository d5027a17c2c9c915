"""request_guard on a fake host that runs WebUI's order of a request (before_process, setup_prompts, the
scripts' process, sample, the scripts' postprocess) with a stand-in for ControlNet that binds something into
the model in process() and unbinds it in postprocess()."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from motion_module.core.patch import Changes
from motion_module.core.request_guard import GUARD_ATTR, drop_copied_guard, guard, undo_on_close


class Model:
    def __init__(self) -> None:
        self.bound: list[str] = []  # what a ControlNet-like extension bound into it


class ControlNetLike:
    def process(self, p: Any) -> None:
        p.model.bound.append("control-lora")

    def postprocess(self, p: Any) -> None:
        p.model.bound.clear()


class P:
    def __init__(self, model: Model, sampling_error: BaseException | None = None) -> None:
        self.model, self.sampling_error, self.log = model, sampling_error, []

    def setup_prompts(self) -> None:
        self.log.append("setup_prompts")

    def sample(self, steps: int) -> str:
        self.log.append(f"sample {steps}")
        if self.sampling_error is not None:
            raise self.sampling_error
        return "latents"

    def close(self) -> None:
        self.log.append("close")


class Request:
    """One AnimateDiff request's state, as the adapter keeps it."""

    def __init__(self, p: P, refusal: BaseException | None = None) -> None:
        self.p, self.error, self.cleanups = p, refusal, 0
        self.scripts = [ControlNetLike()]
        self.edits = Changes()

    def install(self) -> None:
        guard(self.p, self.edits, lambda: self.error, lambda call: ("animated", call()), self.failed)

    def failed(self, error: BaseException) -> None:
        self.error = self.error or error
        self.cleanups += 1
        for script in self.scripts:
            script.postprocess(self.p)


def process_images(request: Request) -> Any:
    """WebUI's order (processing.process_images / process_images_inner), without the parts not involved."""
    p = request.p
    request.install()  # AnimateDiff's before_process
    try:  # WebUI: `with closing(p)`
        p.setup_prompts()
        for script in request.scripts:
            script.process(p)
        result = p.sample(steps=2)
        for script in request.scripts:
            script.postprocess(p)
        return result
    finally:
        p.close()


def test_success_runs_the_sampler_once_and_nothing_else() -> None:
    request = Request(P(Model()))
    assert process_images(request) == ("animated", "latents")
    assert request.p.log == ["setup_prompts", "sample 2", "close"] and request.cleanups == 0
    assert request.p.model.bound == []


@pytest.mark.parametrize("error", [None, ValueError("refused"), RuntimeError("out of memory"), KeyboardInterrupt()])
def test_closing_the_request_undoes_the_wrappers_and_every_other_edit(error: BaseException | None) -> None:
    request = Request(P(Model(), sampling_error=None if isinstance(error, ValueError) else error),
                      error if isinstance(error, ValueError) else None)
    before = dict(vars(request.p))
    request.edits.set_attribute(request.p, "batch_size", 16)  # the request's own edits, with the wrappers
    if error is None:
        process_images(request)
    else:
        with pytest.raises(type(error)):
            process_images(request)
    assert vars(request.p).keys() - {"log"} == before.keys() - {"log"}
    assert all(vars(request.p)[k] is v for k, v in before.items() if k != "log")
    assert request.p.log[-1] == "close" and not request.edits.active


def test_a_refusal_fails_before_any_other_script_process_runs() -> None:
    refusal = ValueError("AnimateDiff parameter 'format': NOPE")
    request = Request(P(Model()), refusal)
    with pytest.raises(ValueError) as caught:
        process_images(request)
    assert caught.value is refusal
    assert request.p.log == ["close"] and request.p.model.bound == []  # nothing bound, nothing to undo


@pytest.mark.parametrize("error", [RuntimeError("out of memory"), KeyboardInterrupt()])
def test_an_error_inside_sampling_ends_the_request_through_the_cleanup_first(error: BaseException) -> None:
    request = Request(P(Model(), sampling_error=error))
    with pytest.raises(type(error)) as caught:
        process_images(request)
    assert caught.value is error and request.error is error
    assert request.cleanups == 1 and request.p.model.bound == []  # ControlNet's binding undone


def test_an_error_found_during_sampling_is_raised_from_sample_with_the_cleanup() -> None:
    request = Request(P(Model()))
    request.install()
    request.p.setup_prompts()
    ControlNetLike().process(request.p)
    request.error = ValueError("found in a hook")
    with pytest.raises(ValueError, match="found in a hook"):
        request.p.sample(steps=1)
    assert request.p.log == ["setup_prompts"] and request.p.model.bound == []  # (not closed: no process_images)


def test_a_failing_cleanup_does_not_hide_the_error() -> None:
    request = Request(P(Model(), sampling_error=RuntimeError("the real error")))

    def broken(error: BaseException) -> None:
        raise OSError("cleanup broke")

    guard(request.p, Changes(), lambda: None, lambda call: call(), broken)
    with pytest.raises(RuntimeError, match="the real error"):
        request.p.sample(steps=1)


def test_installed_once_and_a_copy_runs_as_the_host_made_it() -> None:
    request = Request(P(Model()))
    request.install()
    request.install()
    assert request.p.sample(steps=1) == ("animated", "latents")  # wrapped once, not twice
    inner = copy.copy(request.p)  # a nested generation's copy carries the wrappers of the original
    inner.log = []
    assert drop_copied_guard(inner) and GUARD_ATTR not in vars(inner)
    assert inner.sample(steps=3) == "latents" and inner.log == ["sample 3"] and request.p.log == ["sample 1"]
    assert not drop_copied_guard(request.p)  # the original keeps its own
    other = Request(copy.copy(request.p), ValueError("refused"))
    other.install()  # a copy guarded for itself: its own refusal, its own sampler
    with pytest.raises(ValueError, match="refused"):
        other.p.setup_prompts()


def test_owners_stacked_on_close_are_undone_newest_first() -> None:
    """The img2img Batch tab's set-up (its own owner, undone at close) under a request that edits the same field."""
    request = Request(P(Model()))
    p = request.p
    before = dict(vars(p))
    batch_tab = Changes()
    batch_tab.set_attribute(p, "init_images", ["frame 0", "frame 1", "frame 2"])
    undo_on_close(p, batch_tab)
    process = request.install
    process()
    request.edits.set_attribute(p, "init_images", p.init_images[:2])  # the request keeps the video's frames
    p.close()
    assert vars(p).keys() - {"log"} == before.keys() - {"log"} and "init_images" not in vars(p)
    assert p.log == ["close"] and not batch_tab.active and not request.edits.active
