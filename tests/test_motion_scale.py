"""Motion-scale keyframes: parsing, per-frame values, the parameter, and their effect on the real ldm UNet."""

from __future__ import annotations

import pytest
import torch

from motion_module.core.injection import injected
from motion_module.core.motion_scale import frame_scales, keyframes_text, parse_keyframes
from motion_module.core.patch import Host, animatediff_patch
from motion_module.core.run import plan_run
from motion_module.errors import ParameterError
from motion_module.params.infotext import params_from_infotext, to_infotext
from motion_module.params.request import AnimateDiffParams
from tests.fixtures.motion_modules import make_mm
from tests.fixtures.unets import tiny_unet, unet_inputs


def test_parse_sorts_and_normalises() -> None:
    assert parse_keyframes("16: 0.5, 0:1\n 8 : .25; 31: 2") == ((0, 1.0), (8, 0.25), (16, 0.5), (31, 2.0))
    assert parse_keyframes("  ") == ()
    assert keyframes_text(parse_keyframes("16:0.50,0:1")) == "0: 1, 16: 0.5"


@pytest.mark.parametrize(("text", "message"), [
    ("0 1", "not 'frame: scale'"), ("-1: 1", "not 'frame: scale'"), ("0: 3", "outside 0..2"),
    ("4: 1, 4: 0.5", "two keyframes"), ("a: 1", "not 'frame: scale'"),
])
def test_bad_keyframes_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(ParameterError, match=message) as caught:
        parse_keyframes(text)
    assert caught.value.field == "motion_scale_keyframes"


def test_linear_between_keyframes_held_outside() -> None:
    assert frame_scales(((2, 0.0), (6, 1.0)), 9) == (0.0, 0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0)
    assert frame_scales(((3, 0.4),), 5) == (0.4,) * 5
    with pytest.raises(ParameterError, match="frame 9, but the video has 8 frames"):
        frame_scales(((9, 1.0),), 8)


def test_cyclic_wraps_from_the_last_keyframe_to_the_first() -> None:
    scales = frame_scales(((0, 0.0), (4, 1.0)), 8, cyclic=True)
    assert scales == (0.0, 0.25, 0.5, 0.75, 1.0, 0.75, 0.5, 0.25)


def test_the_parameter_from_api_ui_and_infotext() -> None:
    params = AnimateDiffParams(enable=True, video_length=16, motion_scale_keyframes="8:0.5, 0:1")
    assert params.motion_scale_keyframes == "0: 1, 8: 0.5"
    text = to_infotext(params)
    assert 'motion_scale_keyframes: "0: 1, 8: 0.5"' in text
    assert params_from_infotext(text)["motion_scale_keyframes"] == "0: 1, 8: 0.5"
    assert "motion_scale_keyframes" not in to_infotext(AnimateDiffParams(enable=True))
    with pytest.raises(ParameterError, match="motion_scale_keyframes"):
        AnimateDiffParams(enable=True, motion_scale_keyframes=5)
    with pytest.raises(ParameterError, match="video has 16 frames"):  # checked when the run is planned
        plan_run(AnimateDiffParams(enable=True, video_length=16, motion_scale_keyframes="20: 1"),
                 make_mm("v2").spec, "")
    plan = plan_run(params, make_mm("v2").spec, "")
    assert plan.motion_scales()[8] == 0.5 and len(plan.motion_scales()) == 16  # type: ignore[arg-type]
    assert plan_run(AnimateDiffParams(enable=True, motion_scale=0.3), make_mm("v2").spec, "").motion_scales() == 0.3


@pytest.mark.parametrize("mode", ["unet", "motion_module"])
def test_frames_at_scale_zero_are_the_bare_unets(mode: str) -> None:
    """V2 (no cross-frame GroupNorm): a frame whose scale is 0 gets no motion-module effect at all, however the
    windows run; the other frames do get one."""
    unet, frames = tiny_unet("sd15"), 12
    x, t, c = unet_inputs(frames)
    params = AnimateDiffParams(enable=True, video_length=frames, context=8, overlap=2, closed_loop="N",
                               window_mode=mode, motion_scale_keyframes="0: 0, 3: 0, 4: 1")
    plan = plan_run(params, make_mm("v2").spec, "")
    with torch.no_grad():
        bare = unet(x, t, c)
        with animatediff_patch(Host(unet), make_mm("v2"), plan.context, motion_scale=plan.motion_scales()) as patch:
            inj = patch.injection
            out = plan.denoise(lambda xs, ss, cs: unet(xs, ss, cs), x, t, c, step=0, frames=inj)
    torch.testing.assert_close(out[:4], bare[:4], rtol=1e-6, atol=1e-6)  # fused windows: equal up to rounding
    assert (out[4:] - bare[4:]).abs().amax() > 1e-3


def test_per_frame_scales_need_the_frames_of_each_call() -> None:
    unet = tiny_unet("sd15")
    x, t, c = unet_inputs(4)
    with injected(unet, make_mm("v2"), 4) as injection, torch.no_grad():
        injection.set_motion_scale([0.0, 0.0, 0.0, 0.0])
        with pytest.raises(RuntimeError, match="select_frames"):
            unet(x, t, c)
        injection.select_frames([0, 1, 2, 3])
        zero = unet(x, t, c)
        injection.set_motion_scale(1.0)  # back to one scale: no frames needed
        assert not torch.equal(unet(x, t, c), zero)
    assert torch.equal(zero, unet(x, t, c))  # all frames at 0 == the bare UNet, bit for bit
