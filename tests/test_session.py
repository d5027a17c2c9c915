"""The request session (``motion_module.session``) driven the way WebUI drives it, on a fake host around the real
ldm UNet: before_process, setup_prompts, the scripts' process, p.sample (a small sampler calling the cfg-denoiser
callback and the inner model per step), postprocess, close. One call per hook; the result is the engine's own; every
change to the host and to ``p`` is undone, after success, a refusal and a failure."""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image
from torch import Tensor

from motion_module.control.controlnet import VideoToVideo
from motion_module.core import session
from motion_module.core.injection import level_channels
from motion_module.core.patch import Changes, Host, HostPatch, animatediff_patch
from motion_module.core.run import HostState, RunPlan, plan_run
from motion_module.files.loading import load_motion_module
from motion_module.params import settings
from motion_module.params.request import AnimateDiffParams
from motion_module.video.publish import VideoJob, video_job
from tests.fixtures.motion_modules import build_state_dict, write_checkpoint
from tests.fixtures.unets import CONTEXT_DIM, ScheduleOwner, assert_same_fingerprint, tiny_unet, unet_fingerprint

FRAMES, STEPS, SEED = 6, 2, 11


class InnerModel(torch.nn.Module):
    """The sampler's inner model as WebUI builds it: ``forward(x, sigma, cond=...)`` around the UNet."""

    def __init__(self, unet: torch.nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, x: Tensor, sigma: Tensor, cond: Tensor | None = None) -> Tensor:
        return self.unet(x, sigma, cond)


@dataclass
class Denoiser:
    p: Any
    inner_model: InnerModel
    step: int = 0


@dataclass
class DenoiserParams:  # WebUI's CFGDenoiserParams, as far as the session reads it
    denoiser: Denoiser
    text_cond: Tensor


@dataclass
class Processed:
    images: list[Image.Image]
    infotexts: list[str]
    all_seeds: list[int]
    extra_generation_params: dict[str, Any]
    prompt: str
    index_of_first_image: int = 0
    comments: str = ""


class FakeP:
    """WebUI's processing object: the fields AnimateDiff reads and sets, and the methods it wraps."""

    def __init__(self, unet: torch.nn.Module, sampling_error: BaseException | None = None) -> None:
        self.prompt, self.n_iter, self.batch_size, self.steps, self.cfg_scale = "a fox", 1, 1, STEPS, 7.0
        self.sampler_name, self.scheduler, self.seeds, self.all_prompts = "Euler", "", [SEED], ["a fox"]
        self.do_not_save_grid = self.do_not_save_samples = False
        self.extra_generation_params: dict[str, Any] = {"Model": "tiny"}
        self.script_args: list[Any] = []
        self.override_settings: dict[str, Any] = {}
        self.inner = InnerModel(unet)
        self.sampling_error = sampling_error
        self.log: list[str] = []

    def setup_prompts(self) -> None:
        self.log.append("setup_prompts")

    def sample(self) -> Tensor:
        """A small sampler: per step the cfg-denoiser callback, then the inner model over the batch."""
        self.log.append("sample")
        if self.sampling_error is not None:
            raise self.sampling_error
        gen = torch.Generator().manual_seed(self.seeds[0])
        x = torch.randn(self.batch_size, 4, 8, 8, generator=gen)
        cond = torch.randn(1, 7, CONTEXT_DIM, generator=gen).expand(self.batch_size, -1, -1)
        for step in range(STEPS):
            params = DenoiserParams(Denoiser(self, self.inner, step), cond)
            session.on_cfg_denoiser(params)
            session.before_every_sampling(self)
            x = x - 0.1 * self.inner(x, torch.full((x.shape[0],), 500.0 - 100 * step), cond=params.text_cond)
        return x

    def close(self) -> None:
        self.log.append("close")


@dataclass
class FakeHost:
    """A host over the tiny real UNet (``session.HostAdapter``); it records which of its methods ran."""

    unet: torch.nn.Module
    model_root: Path
    out_dir: Path
    owner: ScheduleOwner = field(default_factory=ScheduleOwner)
    calls: list[str] = field(default_factory=list)
    failed_ends: int = 0

    def task(self) -> object:
        return "task"

    def facts(self, p: Any) -> session.HostFacts:
        self.calls.append("facts")
        return session.HostFacts(HostState(), prompt=p.prompt, n_iter=p.n_iter, steps=p.steps, cfg_scale=p.cfg_scale,
                                 sampler=p.sampler_name, scheduler=p.scheduler, base="sd15",
                                 channels=tuple(level_channels(self.unet)), model_root=self.model_root, cached=False)

    def video_input(self, p: Any, params: AnimateDiffParams, edits: Changes) -> VideoToVideo:
        self.calls.append("video_input")
        return VideoToVideo({}, 0)

    def model_patch(self, p: Any, request: session.Request) -> AbstractContextManager[HostPatch]:
        self.calls.append("model_patch")
        plan = request.planned
        assert request.module is not None
        return animatediff_patch(Host(self.unet, self.owner), request.module, plan.context,
                                 plan.schedule.alphas_cumprod(), plan.motion_scales())

    def prepare_sampling(self, p: Any, request: session.Request, patch: HostPatch) -> None:
        self.calls.append("prepare_sampling")

    def on_denoiser(self, denoiser: Any, request: session.Request) -> None:
        self.calls.append("on_denoiser")
        assert request.patch is not None
        request.patch.wrap_forward(denoiser.inner_model, lambda inner: lambda x, sigma, cond=None: request.denoise(
            lambda xs, ss, cs: inner(xs, ss, cond=cs), x, sigma, cond))

    def before_every_sampling(self, p: Any, request: session.Request) -> None:
        self.calls.append("before_every_sampling")

    def end_failed(self, p: Any) -> None:
        self.failed_ends += 1

    def video_job(self, p: Any, request: session.Request) -> VideoJob:
        self.calls.append("video_job")
        plan = request.planned
        return video_job(plan.frames, request.params, self.out_dir, lambda key, default: settings.DEFAULTS.get(key,
                                                                                                           default))

    def interrupted(self) -> bool:
        return False


ARGS = {"enable": True, "model": "mm_v2.safetensors", "video_length": FRAMES, "context": 4, "overlap": 1,
        "closed_loop": "N", "format": ["GIF"]}


@pytest.fixture()
def host(tmp_path: Path) -> FakeHost:
    (tmp_path / "models").mkdir()
    write_checkpoint(tmp_path / "models" / "mm_v2.safetensors", build_state_dict("v2"))
    return FakeHost(tiny_unet(), tmp_path / "models", tmp_path / "out")


def process_images(p: FakeP, host: FakeHost, args: dict[str, Any]) -> Processed:
    """WebUI's order of a request (processing.process_images with `closing(p)`), with AnimateDiff's hooks."""
    try:
        session.start(p, [args], host)  # before_process
        p.setup_prompts()
        p.log.append("other scripts' process")
        latents = p.sample()
        images = [Image.new("RGB", (8, 8), (int(v * 40) % 256, 0, 0)) for v in latents.mean(dim=(1, 2, 3))]
        processed = Processed(images, [f"{p.prompt}\nSteps: 2"] * len(images), [SEED] * len(images),
                              p.extra_generation_params, str(p.prompt))
        session.postprocess(p, processed)
        return processed
    finally:
        p.close()


def reference(host: FakeHost, p: FakeP) -> Tensor:
    """The same sampler, with the engine's pieces wired by hand (plan, patch, windows)."""
    module = load_motion_module(host.model_root / "mm_v2.safetensors")
    plan: RunPlan = plan_run(AnimateDiffParams(**{k: v for k, v in ARGS.items() if k != "format"}), module.spec, "")
    gen = torch.Generator().manual_seed(SEED)
    x = torch.randn(FRAMES, 4, 8, 8, generator=gen)
    cond = torch.randn(1, 7, CONTEXT_DIM, generator=gen).expand(FRAMES, -1, -1)
    with animatediff_patch(Host(host.unet, ScheduleOwner()), module, plan.context) as patch, torch.no_grad():
        for step in range(STEPS):
            sigma = torch.full((FRAMES,), 500.0 - 100 * step)
            x = x - 0.1 * plan.denoise(lambda xs, ss, cs: host.unet(xs, ss, cs), x, sigma, cond, step=step,
                                       frames=patch.injection)
    return x


def _snapshot(p: FakeP) -> dict[str, Any]:
    return dict(vars(p))


def assert_restored(p: FakeP, before: dict[str, Any], host: FakeHost, unet_before: dict[str, object]) -> None:
    after = vars(p)
    assert after.keys() - {"log"} == before.keys() - {"log"}
    assert all(after[k] is v for k, v in before.items() if k != "log"), [k for k, v in before.items()
                                                                          if k != "log" and after[k] is not v]
    assert p.extra_generation_params == {"Model": "tiny"}
    assert_same_fingerprint(unet_before, unet_fingerprint(host.unet))


def test_a_request_plans_once_runs_each_hook_once_and_gives_the_engines_result(host: FakeHost) -> None:
    p = FakeP(host.unet)
    before, unet_before = _snapshot(p), unet_fingerprint(host.unet)
    seen: dict[str, Any] = {}
    sample = p.sample

    def spying_sample() -> Tensor:  # what the request looks like while it samples
        request = session.request_of(p)
        assert request is not None
        seen.update(batch=p.batch_size, saved=p.do_not_save_samples, plan=request.plan,
                    entry=p.extra_generation_params.get("AnimateDiff"))
        seen["latents"] = out = sample()
        seen["plan_after"] = request.plan
        return out

    p.sample = spying_sample  # type: ignore[method-assign]
    with torch.no_grad():
        processed = process_images(p, host, ARGS)
    del vars(p)["sample"]
    assert host.calls == ["facts", "video_input", "model_patch", "prepare_sampling",
                          *["on_denoiser", "before_every_sampling"] * STEPS, "video_job"]
    assert seen["batch"] == FRAMES and seen["saved"] is True and "context: 4" in seen["entry"]
    assert seen["plan"] is seen["plan_after"]  # planned once, in before_process
    torch.testing.assert_close(seen["latents"], reference(host, p), rtol=0, atol=0)
    assert p.log == ["setup_prompts", "other scripts' process", "sample", "close"]
    assert [path.suffix for path in host.out_dir.rglob("*.gif")] == [".gif"]
    assert len(processed.images) == 1 and "AnimateDiff files" in processed.extra_generation_params
    assert_restored(p, before, host, unet_before)


@pytest.mark.parametrize("bad, field_name", [({"context": 40}, "context"), ({"model": "missing.ckpt"}, "model")])
def test_a_refusal_is_raised_before_other_scripts_run_and_leaves_nothing(host: FakeHost, bad: dict[str, Any],
                                                                         field_name: str) -> None:
    p = FakeP(host.unet)
    before, unet_before = _snapshot(p), unet_fingerprint(host.unet)
    with pytest.raises(Exception, match=field_name):
        process_images(p, host, {**ARGS, **bad})
    assert p.log == ["close"] and "model_patch" not in host.calls and host.failed_ends == 0
    assert_restored(p, before, host, unet_before)


@pytest.mark.parametrize("error", [RuntimeError("out of memory"), KeyboardInterrupt()])
def test_a_failure_in_sampling_ends_the_request_and_restores_everything(host: FakeHost, error: BaseException) -> None:
    p = FakeP(host.unet, sampling_error=error)
    before, unet_before = _snapshot(p), unet_fingerprint(host.unet)
    with pytest.raises(type(error)):
        process_images(p, host, ARGS)
    assert host.failed_ends == 1 and "video_job" not in host.calls
    assert_restored(p, before, host, unet_before)


def test_an_error_in_a_hook_is_raised_from_sampling(host: FakeHost, monkeypatch: pytest.MonkeyPatch) -> None:
    p = FakeP(host.unet)
    before, unet_before = _snapshot(p), unet_fingerprint(host.unet)

    def broken(denoiser: Any, request: session.Request) -> None:
        raise ValueError("the host broke in a hook")

    monkeypatch.setattr(host, "on_denoiser", broken)
    with pytest.raises(ValueError, match="broke in a hook"):
        process_images(p, host, ARGS)
    assert host.failed_ends == 1
    assert_restored(p, before, host, unet_before)


def test_off_or_nested_requests_are_left_alone(host: FakeHost) -> None:
    p = FakeP(host.unet)
    before = _snapshot(p)
    assert session.start(p, [False], host) is None and session.start(p, [{"enable": False}], host) is None
    assert vars(p) == before and host.calls == []
