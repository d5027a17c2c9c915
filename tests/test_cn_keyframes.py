"""ControlNet keyframes (motion_module/control/cn_keyframes.py, controlnet.prepare) and the prompt schedule ControlNet
reads for IP-Adapter prompt travel (run.PromptSchedule through scripts/animatediff_utils.get_animatediff_arg).

(Live, with sd-webui-controlnet 1.1.455 and the tiny ControlNet: tests/webui/test_v2v_keyframes_live.py.)
"""

from __future__ import annotations

import copy
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from PIL import Image

from motion_module.control.cn_keyframes import keyframe_line, place_keyframes, split_batch_images
from motion_module.control.controlnet import FrameSources, UnitInput, plan_control_frames, prepare
from motion_module.core.prompts import slerp
from motion_module.core.run import PromptSchedule, plan_run
from motion_module.errors import ParameterError
from motion_module.files.spec import MotionModuleSpec
from motion_module.params.request import AnimateDiffParams
from scripts.animatediff_utils import get_animatediff_arg
from tests.fixtures.controlnet_units import Unit, frames_dir


def field_error(call: Any, *args: Any, match: str) -> ParameterError:
    with pytest.raises(ParameterError, match=match) as caught:
        call(*args)
    assert caught.value.status_code == 422 and caught.value.field == "batch_images"
    return caught.value


# ----------------------------------------------------------------------------- the keyframe line
def test_the_batch_input_names_a_folder_and_keyframes() -> None:
    assert split_batch_images(0, "/frames") == ("/frames", None)
    assert split_batch_images(0, "/frames\nkeyframe: 0, 8,15") == ("/frames", (0, 8, 15))
    assert split_batch_images(0, " /k \nmask:/m\n  KeyFrame:-1\n") == ("/k", (-1,))  # spacing and case free
    assert split_batch_images(0, "\nkeyframe: 3") == (None, (3,))
    field_error(split_batch_images, 2, "/k\nkeyframe: 0, eight", match=r"unit 2: 'keyframe: 0, eight' is not a list")
    field_error(split_batch_images, 0, "/k\nkeyframe: 0,", match="not a list of frame numbers")
    field_error(split_batch_images, 0, "/k\nkeyframe: 0\nkeyframe: 4", match="more than one keyframe line")


def test_keyframes_are_placed_in_the_video() -> None:
    placed = place_keyframes(0, (8, 0, -1), images=3, frames=16)
    assert (placed.frames, placed.images) == ((0, 8, 15), (1, 0, 2))  # frame order; image i stays with its frame
    assert keyframe_line(placed.frames) == "keyframe: 0, 8, 15"
    field_error(place_keyframes, 1, (0, 16), 2, 16, match=r"unit 1: keyframe 16 is outside the video \(frames 0..15")
    field_error(place_keyframes, 0, (0, -17), 2, 16, match="keyframe -17 is outside")
    field_error(place_keyframes, 0, (15, -1), 2, 16, match="keyframes 15 and -1 are both frame 15")
    field_error(place_keyframes, 0, (0, 8), 3, 16, match=r"has 3 images for 2 keyframes \(0, 8\)")


def test_keyframe_units_do_not_set_the_length(tmp_path: Path) -> None:
    keys, video = frames_dir(tmp_path / "keys", 2), frames_dir(tmp_path / "video", 7)
    keyed = UnitInput(0, batch_dir=str(keys), keyframes=(0, 6))
    plan = plan_control_frames([keyed, UnitInput(1)], FrameSources(video_path=video), 0)
    assert plan.frames == 7 and [(u.index, u.count, u.keyframes) for u in plan.units] == [(0, 2, (0, 6)), (1, 7, None)]
    assert plan_control_frames([keyed], FrameSources(), 12).frames == 12
    assert plan_control_frames([keyed], FrameSources(), 0).frames == 0  # prepare then takes the context length
    field_error(plan_control_frames, [UnitInput(0, has_image=True, keyframes=(0,))], FrameSources(), 8,
                match="a keyframe line needs the unit's own folder")


def test_prepare_stages_the_keyframes_in_frame_order(tmp_path: Path) -> None:
    keys = frames_dir(tmp_path / "keys", 2)  # 0.png, 1.png
    slots = [(3, Unit(input_mode="batch", batch_images=f"{keys}\nkeyframe: 6, -8"))]
    params = AnimateDiffParams(enable=True, video_length=8, context=4)
    v2v = prepare(params, slots, work_dir=lambda: tmp_path / "work", allowed_roots=[tmp_path], batch_mode="BATCH")
    unit = v2v.units[3]
    folder, line = unit.batch_images.split("\n")
    assert v2v.frames == 8 and line == "keyframe: 0, 6" and unit.animatediff_batch is True
    # ControlNet 1.1.455 (scripts/animate_diff/batch.py) reads the line as the ints after "keyframe:"
    assert [int(part.strip()) for part in line[len("keyframe:"):].strip().split(",")] == [0, 6]
    staged = [p.resolve().name for p in sorted(Path(folder).iterdir())]
    assert staged == ["1.png", "0.png"]  # frame 0 <- 1.png (-8), frame 6 <- 0.png
    defaults = AnimateDiffParams(enable=True, context=8)  # video_length 0 and no other source: the context
    assert prepare(defaults, slots, work_dir=lambda: tmp_path / "w2", allowed_roots=[tmp_path],
                   batch_mode="BATCH").frames == 8
    with pytest.raises(ParameterError, match="keyframe 6 is outside the video"):
        prepare(params.replace_field("video_length", 6), slots, work_dir=lambda: tmp_path / "w3",
                allowed_roots=[tmp_path], batch_mode="BATCH")


def test_ipadapter_units_cannot_read_frames(tmp_path: Path) -> None:
    keys, video = frames_dir(tmp_path / "keys", 2), frames_dir(tmp_path / "video", 4)
    params = AnimateDiffParams(enable=True, video_path=str(video))
    keyed = [(0, Unit(input_mode="batch", batch_images=f"{keys}\nkeyframe: 0, 3", is_ipadapter=True))]
    with pytest.raises(ParameterError, match="unit 0 is an IP-Adapter unit.*ImageEmbed") as caught:
        prepare(params, keyed, work_dir=lambda: tmp_path / "w", allowed_roots=[tmp_path], batch_mode="BATCH")
    assert caught.value.field == "batch_images" and caught.value.status_code == 422
    with pytest.raises(ParameterError, match="IP-Adapter") as fed:  # fed by video_path: that field is named
        prepare(params, [(0, Unit(is_ipadapter=True))], work_dir=lambda: tmp_path / "w", allowed_roots=[tmp_path],
                batch_mode="BATCH")
    assert fed.value.field == "video_path"
    single = prepare(params, [(0, Unit(is_ipadapter=True, image="one image"))], work_dir=lambda: tmp_path / "w",
                     allowed_roots=[tmp_path], batch_mode="BATCH")
    assert single.units == {}  # its own image: every frame, fine


# ----------------------------------------------------------------------------- IP-Adapter prompt travel
def request(closed_loop: str, prompt: str = "") -> Any:
    params = AnimateDiffParams(enable=True, video_length=8, context=4, closed_loop=closed_loop)
    plan = plan_run(params, MotionModuleSpec("v3", "sd15", (32, 64, 128, 128), 32, False), prompt)
    return SimpleNamespace(animatediff_run=SimpleNamespace(params=params, plan=plan))


def controlnet_travel(p: Any, keyframes: list[int], embeds: torch.Tensor, batch_size: int = 8) -> Any:
    """sd-webui-controlnet 1.1.455's IP-Adapter keyframe travel (scripts/controlnet.py), step by step."""
    c_full = torch.zeros((batch_size, *embeds.shape[1:]), dtype=embeds.dtype)
    for i, idx in enumerate(keyframes[:-1]):
        c_full[idx:keyframes[i + 1]] = embeds[i]
    c_full[keyframes[-1]:] = embeds[-1]
    ad_params = get_animatediff_arg(p)
    prompt_scheduler = copy.deepcopy(ad_params.prompt_scheduler)
    prompt_scheduler.prompt_map = {i: "" for i in keyframes}
    closed = (ad_params.video_length > ad_params.batch_size) and (ad_params.closed_loop in ["R+P", "A"])
    return prompt_scheduler.multi_cond(c_full, closed)


def test_controlnet_travels_ip_adapter_embeddings_between_keyframes() -> None:
    embeds = torch.randn(2, 4, 16, generator=torch.Generator().manual_seed(0))  # one image embedding per keyframe
    held = controlnet_travel(request("N"), [0, 4], embeds)
    assert held.shape == (8, 4, 16)
    assert torch.equal(held[0], embeds[0]) and torch.equal(held[4], embeds[1])
    torch.testing.assert_close(held[2], slerp(embeds[0], embeds[1], 0.5))
    torch.testing.assert_close(held[1], slerp(embeds[0], embeds[1], 0.25))
    assert all(torch.equal(held[f], embeds[1]) for f in (5, 6, 7))  # no closed loop: held after the last
    looped = controlnet_travel(request("R+P"), [0, 4], embeds)  # 8 frames > context 4: wraps back to frame 0
    torch.testing.assert_close(looped[6], slerp(embeds[1], embeds[0], 0.5))
    lerped = request("N")
    lerped.animatediff_run = SimpleNamespace(params=lerped.animatediff_run.params.replace_field(
        "prompt_interpolation", "lerp"), plan=None)  # before planning: args alone, the run's interpolation
    torch.testing.assert_close(controlnet_travel(lerped, [0, 4], embeds)[2], (embeds[0] + embeds[1]) / 2)


def test_the_schedule_is_the_runs_prompt_travel() -> None:
    p = request("R+P", "masterpiece\n0: a cat\n5: a dog")
    schedule = get_animatediff_arg(p).prompt_scheduler
    assert schedule is not None and schedule.prompt_map == {0: "masterpiece, a cat", 5: "masterpiece, a dog"}
    copy.deepcopy(schedule).prompt_map = {}  # ControlNet edits its copy only
    assert schedule.prompt_map == {0: "masterpiece, a cat", 5: "masterpiece, a dog"}
    plan = p.animatediff_run.plan
    rows = {"crossattn": torch.randn(8, 77, 32), "vector": torch.randn(8, 16)}  # SDXL's dict cond
    travelled = plan.frame_conds(rows)
    again = schedule.multi_cond(rows, plan.cyclic)
    assert travelled.keys() == again.keys() and all(torch.equal(travelled[k], again[k]) for k in rows)
    torch.testing.assert_close(travelled["vector"][7], slerp(rows["vector"][5], rows["vector"][0], 2 / 3))  # wraps
    assert PromptSchedule().multi_cond(rows["vector"]) is rows["vector"]  # no map: unchanged


def test_keyframe_images_are_read_in_natural_order(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    for name, shade in (("10.png", 200), ("2.png", 100)):  # natural order: 2.png first
        Image.new("RGB", (8, 8), (shade, 0, 0)).save(keys / name)
    slots = [(0, Unit(input_mode="batch", batch_images=f"{keys}\nkeyframe: 1, 3"))]
    v2v = prepare(AnimateDiffParams(enable=True, video_length=4), slots, work_dir=lambda: tmp_path / "w",
                  allowed_roots=[tmp_path], batch_mode="BATCH")
    staged = sorted(Path(v2v.units[0].batch_images.split("\n")[0]).iterdir())
    assert [p.resolve().name for p in staged] == ["2.png", "10.png"]


def test_controlnet_gets_the_context_the_run_uses_capped_at_the_frames() -> None:
    params = AnimateDiffParams(enable=True, video_length=8, context=16, closed_loop="R+P")
    plan = plan_run(params, MotionModuleSpec("v3", "sd15", (32, 64, 128, 128), 32, False), "")
    planned = get_animatediff_arg(SimpleNamespace(animatediff_run=SimpleNamespace(params=params, plan=plan)))
    unplanned = get_animatediff_arg(SimpleNamespace(animatediff_run=SimpleNamespace(params=params, plan=None)))
    assert planned is not None and unplanned is not None
    assert planned.batch_size == unplanned.batch_size == plan.context == 8 and planned.video_length == 8
