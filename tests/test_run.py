"""The run planner: validation, per-frame travel conds, and batch-composition independence."""

from __future__ import annotations

import pytest
import torch

from motion_module.core.run import plan_run
from motion_module.errors import ParameterError, TooManyFramesError
from motion_module.files.spec import MotionModuleSpec
from motion_module.params.request import AnimateDiffParams
from tests.fixtures.unets import FrameLog

V2 = MotionModuleSpec("v2", "sd15", (32, 64, 128, 128), 32, True)
V1 = MotionModuleSpec("v1", "sd15", (32, 64, 128, 128), 24, False)
SDXL = MotionModuleSpec("sdxl", "sdxl", (32, 64, 128), 32, False)


def params(**kw: object) -> AnimateDiffParams:
    return AnimateDiffParams(enable=True, **kw)  # type: ignore[arg-type]


def test_validation_and_defaults() -> None:
    plan = plan_run(params(), V2, "a cat")
    assert (plan.frames, plan.context, plan.overlap, plan.travel) == (16, 16, 4, None)
    assert plan.windows(0) == [list(range(16))]
    with pytest.raises(TooManyFramesError, match="parameter .context.: .*24-frame limit"):
        plan_run(params(context=32), V1, "")
    short = plan_run(params(video_length=6, context=16), V2, "")
    assert (short.frames, short.context) == (6, 6)  # a short clip is one window of all its frames
    assert short.windows(3) == [list(range(6))]


def test_schedule_choice() -> None:
    assert plan_run(params(), V2, "").schedule.label == "linear 0.00085-0.012"
    assert plan_run(params(), SDXL, "").schedule.label == "scaled_linear 0.00085-0.02"
    manual = plan_run(params(schedule="scaled_linear"), V2, "").schedule
    assert (manual.beta_schedule, manual.beta_end) == ("scaled_linear", 0.012)


def test_loop_modes() -> None:
    assert plan_run(params(video_length=8, context=8, closed_loop="A"), V2, "").ping_pong
    assert not plan_run(params(video_length=24, context=16, closed_loop="A"), V2, "").ping_pong
    assert plan_run(params(video_length=24, context=16, closed_loop="R+P"), V2, "").cyclic
    assert not plan_run(params(video_length=8, context=16, closed_loop="R+P"), V2, "").cyclic


TRAVEL = "best quality\n0: a calm sea\n6: a storm\nsunset"


def test_prompts_for_webui() -> None:
    plan = plan_run(params(video_length=8, context=8), V2, TRAVEL)
    prompts = plan.prompts(TRAVEL, n_iter=2)
    assert prompts is not None and len(prompts) == 16
    assert prompts[0] == prompts[5] != prompts[6] == prompts[7]
    assert "a calm sea" in prompts[0] and "best quality" in prompts[0] and "sunset" in prompts[7]
    assert plan_run(params(), V2, "no travel here").prompts("no travel here", 2) is None


class DictWithShape(dict):  # what A1111 uses for SDXL conds
    @property
    def shape(self) -> torch.Size:
        return self["crossattn"].shape


def test_frame_conds_interpolate_keyframes() -> None:
    plan = plan_run(params(video_length=8, context=8), V2, TRAVEL)
    cond = torch.randn(8, 77, 16)
    out = plan.frame_conds(cond)
    assert out.shape == cond.shape
    torch.testing.assert_close(out[0], cond[0])
    torch.testing.assert_close(out[6], cond[6])
    torch.testing.assert_close(out[7], cond[6])  # held after the last key (not cyclic)
    mid = out[3]
    assert not torch.allclose(mid, cond[0]) and not torch.allclose(mid, cond[6])
    sdxl = DictWithShape(crossattn=torch.randn(8, 77, 16), vector=torch.randn(8, 24))
    out_xl = plan.frame_conds(sdxl)
    assert type(out_xl) is DictWithShape and out_xl.shape == sdxl.shape
    torch.testing.assert_close(out_xl["vector"][6], sdxl["vector"][6])
    with pytest.raises(ParameterError, match="AND"):
        plan.frame_conds(torch.randn(10, 77, 16))


def test_denoise_never_mixes_groups() -> None:
    """Results are the same whether WebUI sends [cond; uncond] in one call or two calls."""
    plan = plan_run(params(video_length=20, context=8, overlap=2), V2, "")
    calls: list[int] = []

    def denoiser(x: torch.Tensor, sigma: torch.Tensor, cond: dict[str, list[torch.Tensor]]) -> torch.Tensor:
        calls.append(x.shape[0])
        assert cond["c_crossattn"][0].shape[0] == x.shape[0] == sigma.shape[0]
        # depends on the whole call's content: mixing groups in one call would change it
        return x * x.mean() + cond["c_crossattn"][0].mean(dim=(1, 2)).view(-1, 1, 1, 1)

    x = torch.randn(40, 4, 2, 2)
    sigma = torch.rand(40)
    cond = {"c_crossattn": [torch.randn(40, 3, 5)], "c_concat": [torch.zeros(40, 5, 1, 1)]}
    frames = FrameLog()
    together = plan.denoise(denoiser, x, sigma, cond, step=3, frames=frames)
    assert set(calls) == {8} and set(frames.windows) == {8}
    halves = [plan.denoise(denoiser, x[i:i + 20], sigma[i:i + 20],
                           {k: [v[0][i:i + 20]] for k, v in cond.items()}, step=3, frames=frames)
              for i in (0, 20)]
    assert torch.equal(together, torch.cat(halves))
    with pytest.raises(ParameterError, match="AND prompts"):
        plan.denoise(denoiser, torch.randn(30, 4, 2, 2), sigma[:30], None, step=0, frames=frames)


def test_short_clip_calls_denoiser_once_per_group() -> None:
    plan = plan_run(params(video_length=6, context=16), V2, "")
    seen: list[int] = []
    x = torch.randn(12, 4, 2, 2)
    out = plan.denoise(lambda a, s, c: (seen.append(a.shape[0]), a * 2)[1], x, torch.ones(12), None, step=0,
                       frames=FrameLog())
    assert seen == [6, 6] and torch.equal(out, x * 2)
