"""ControlNet video-to-video in the engine: per-call hint slicing (on the real ldm UNet with motion modules
inserted, through `RunPlan.denoise`, the path WebUI runs) and the planning of each unit's frames."""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from motion_module.control.controlnet import FrameSources, HintSlicer, UnitInput, plan_control_frames
from motion_module.core.injection import injected
from motion_module.core.run import plan_run
from motion_module.errors import InputError, ParameterError
from motion_module.params.request import AnimateDiffParams
from motion_module.video.input import output_fps
from tests.fixtures.controlnet_units import Unit, frames_dir
from tests.fixtures.motion_modules import make_mm
from tests.fixtures.unets import unet_inputs

FRAMES, K = 12, 1  # frame K's control image differs between the two runs


class ControlParams:
    """ControlNet's ControlParams as far as hints go: a ``hint_cond`` property whose setter drops the
    per-call cache (``used_hint_cond``), and a plain ``hr_hint_cond``."""

    def __init__(self, hint: torch.Tensor) -> None:
        self._hint_cond, self.hr_hint_cond, self.used_hint_cond = hint, None, None

    @property
    def hint_cond(self) -> torch.Tensor:
        return self._hint_cond

    @hint_cond.setter
    def hint_cond(self, value: torch.Tensor) -> None:
        self._hint_cond, self.used_hint_cond = value, None


class ControlledUNet:
    """The UNet as ControlNet's forward runs it: the residual from each row's hint (a fixed random conv of
    the control image, at control resolution 8x the latent) is added to that row's input."""

    def __init__(self, unet: torch.nn.Module, param: ControlParams) -> None:
        self.unet, self.param = unet, param
        self.conv = torch.nn.Conv2d(3, 4, 8, stride=8)
        torch.nn.init.normal_(self.conv.weight, std=0.2, generator=torch.Generator().manual_seed(4))
        torch.nn.init.zeros_(self.conv.bias)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, cond: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.param.used_hint_cond is None:
            self.param.used_hint_cond = self.param.hint_cond
        hint = self.param.used_hint_cond
        assert hint.shape[0] == x.shape[0], (hint.shape, x.shape)  # ControlNet needs a hint per row
        return self.unet(x + self.conv(hint), sigma, cond["c_crossattn"])


def control_images(changed: bool) -> torch.Tensor:
    hints = torch.rand(FRAMES, 3, 64, 64, generator=torch.Generator().manual_seed(9))
    if changed:
        hints[K] = 1.0 - hints[K]
    return hints


Slice = Callable[[HintSlicer, list[int]], None]


def correct(slicer: HintSlicer, rows: list[int]) -> None:
    slicer.select(rows)


def first_window_bug(slicer: HintSlicer, rows: list[int]) -> None:
    """The bug the test must catch: every call gets the hints of the clip's first window."""
    slicer.select([r % 4 for r in range(len(rows))])


def run(unet: torch.nn.Module, hints: torch.Tensor, how: Slice, *, doubled: bool = False,
        max_rows: int | None = None) -> torch.Tensor:
    """Three sampler calls (cond + uncond, 12 frames, context 4, no overlap: windows 0-3, 4-7, 8-11)."""
    plan = plan_run(AnimateDiffParams(enable=True, video_length=FRAMES, context=4, overlap=0, closed_loop="N"),
                    make_mm("v2").spec, "")
    assert all(plan.windows(step) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]] for step in range(3))
    param = ControlParams(torch.cat([hints, hints]) if doubled else hints)  # 2N: batch cond/uncond copies
    original = param.hint_cond
    model = ControlledUNet(unet, param)
    x, t, c = unet_inputs(FRAMES, videos=2)
    with injected(unet, make_mm("v2"), 4) as injection, torch.no_grad():
        for step in range(3):
            with HintSlicer([param], FRAMES) as slicer:
                x = plan.denoise(model, x, t, {"c_crossattn": c}, step=step, frames=injection,
                                 max_rows=max_rows, on_frames=lambda rows, s=slicer: how(s, rows))
            assert param.hint_cond is original  # the full tensor is back after every step
    return x


def check_slicing(a: torch.Tensor, b: torch.Tensor) -> None:
    """Frames that never share a window with frame K are bit-identical; frame K differs (both groups)."""
    for group in (0, FRAMES):
        assert not torch.equal(a[group + K], b[group + K])
        for frame in range(8, 12):
            assert torch.equal(a[group + frame], b[group + frame]), frame


@pytest.mark.parametrize(("doubled", "max_rows"), [(False, None), (True, None), (True, 8)])
def test_each_window_sees_exactly_its_frames_hints(unet: torch.nn.Module, doubled: bool, max_rows: int | None):
    a = run(unet, control_images(False), correct, doubled=doubled, max_rows=max_rows)
    b = run(unet, control_images(True), correct, doubled=doubled, max_rows=max_rows)
    check_slicing(a, b)


def test_the_first_window_bug_is_detected(unet: torch.nn.Module):
    a = run(unet, control_images(False), first_window_bug)
    b = run(unet, control_images(True), first_window_bug)
    with pytest.raises(AssertionError):
        check_slicing(a, b)


def test_hints_that_are_not_per_frame_are_left_alone():
    single, keyframes, per_frame = ControlParams(torch.ones(1, 3, 8, 8)), ControlParams(torch.ones(5, 3, 8, 8)), \
        ControlParams(torch.arange(6.0).view(6, 1, 1, 1))
    per_frame.hr_hint_cond = torch.arange(12.0).view(12, 1, 1, 1)  # 2N rows at hires resolution
    embedding = type("Embed", (), {"hint_cond": object(), "hr_hint_cond": None})()
    originals = (single.hint_cond, keyframes.hint_cond, per_frame.hint_cond, per_frame.hr_hint_cond)
    with HintSlicer([single, keyframes, per_frame, embedding], 6) as slicer:
        assert slicer.sliced == 2
        slicer.select([4, 5, 0])
        assert per_frame.hint_cond.flatten().tolist() == [4.0, 5.0, 0.0]
        assert per_frame.hr_hint_cond.flatten().tolist() == [4.0, 5.0, 0.0]
        assert single.hint_cond is originals[0] and keyframes.hint_cond is originals[1]
    assert (single.hint_cond, keyframes.hint_cond, per_frame.hint_cond, per_frame.hr_hint_cond) == originals
    with pytest.raises(RuntimeError), HintSlicer([per_frame], 6) as slicer:  # restored on errors too
        slicer.select([1])
        raise RuntimeError("mid-call")
    assert per_frame.hint_cond is originals[2]


# ----------------------------------------------------------------------------- planning the frames
def test_sources_in_priority_order(tmp_path: Path):
    own, batch, video, path = (frames_dir(tmp_path / n, c) for n, c in
                               (("own", 10), ("batch", 9), ("video", 8), ("path", 7)))
    units = [UnitInput(0, has_image=True), UnitInput(1, batch_dir=str(own)), UnitInput(2)]
    everything = FrameSources(i2i_batch_dir=batch, video_frames_dir=video, video_path=path)
    plan = plan_control_frames(units, everything, 0)
    assert [(u.index, u.image_dir, u.count) for u in plan.units] == [(1, own, 10), (2, batch, 9)]
    assert plan.frames == 9  # 0 = the shortest source
    assert plan_control_frames([UnitInput(2)], FrameSources(video_frames_dir=video, video_path=path), 0).units[
        0].image_dir == video
    assert plan_control_frames([UnitInput(2)], FrameSources(video_path=path), 5).frames == 5
    assert plan_control_frames([UnitInput(0, has_image=True)], everything, 0) == plan_control_frames([], everything, 0)


def test_planning_errors_name_the_unit_and_the_counts(tmp_path: Path):
    path = frames_dir(tmp_path / "path", 7)
    with pytest.raises(ParameterError, match=r"unit 3 .*video_path.*7.*12|12.*7"):
        plan_control_frames([UnitInput(3)], FrameSources(video_path=path), 12)
    with pytest.raises(ParameterError, match="unit 0 has no input"):
        plan_control_frames([UnitInput(0)], FrameSources(), 0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ParameterError, match="'video_path'.*holds no images") as caught:  # a client mistake: 422
        plan_control_frames([UnitInput(0)], FrameSources(video_path=tmp_path / "empty"), 0)
    assert caught.value.status_code == 422 and caught.value.field == "video_path"
    with pytest.raises(ParameterError, match="'video_path'.*does not exist"):
        plan_control_frames([UnitInput(0)], FrameSources(video_path=tmp_path / "nowhere"), 0)
    mixed = frames_dir(tmp_path / "mixed", 2)
    Image.new("RGB", (8, 8)).save(mixed / "2.png")
    with pytest.raises(ParameterError, match="'video_path'.*differ in size"):
        plan_control_frames([UnitInput(0)], FrameSources(video_path=mixed), 0)
    with pytest.raises(InputError, match="holds no images") as unnamed:  # a unit's own folder: not our field
        plan_control_frames([UnitInput(0, batch_dir=str(tmp_path / "empty"))], FrameSources(), 0)
    assert unnamed.value.status_code == 422


def test_inpaint_units_read_images_and_masks(tmp_path: Path):
    frames_dir(tmp_path / "clip" / "image", 6)
    frames_dir(tmp_path / "clip" / "mask", 6)
    unit = UnitInput(0, inpaint=True)
    plan = plan_control_frames([unit], FrameSources(video_path=tmp_path / "clip"), 0)
    assert plan.units[0].image_dir.name == "image" and plan.frames == 6
    assert plan.units[0].masks is not None and [m.parent.name for m in plan.units[0].masks] == ["mask"] * 6
    plain, masks = frames_dir(tmp_path / "plain", 5), frames_dir(tmp_path / "masks", 3)
    with pytest.raises(ParameterError, match="3 masks for the 5 frames"):
        plan_control_frames([unit], FrameSources(video_path=plain, mask_path=masks), 0)
    with pytest.raises(ParameterError, match="'video_path'.*image/ and mask/"):
        plan_control_frames([unit], FrameSources(video_path=plain), 0)
    with pytest.raises(ParameterError, match="'mask_path'.*holds no images"):
        (tmp_path / "no-masks").mkdir()
        plan_control_frames([unit], FrameSources(video_path=plain, mask_path=tmp_path / "no-masks"), 0)


def test_output_fps():
    assert output_fps(12.0, Fraction(30000, 1001)) == 12.0
    assert output_fps(0, Fraction(30000, 1001)) == Fraction(30000, 1001)
    assert output_fps(0, None) == 8.0


def test_slicer_moves_rows_to_the_device_and_keeps_them_small():
    hints = torch.rand(256, 3, 64, 64)
    param: Any = ControlParams(hints)
    with HintSlicer([param], 256, device="cpu") as slicer:
        slicer.select(list(range(16)))
        assert param.hint_cond.shape == (16, 3, 64, 64) and param.hint_cond.data_ptr() != hints.data_ptr()


# ----------------------------------------------------------------------------- one request's V2V input
def ntsc_video_with_sound(folder: Path, frames: int = 30) -> Path:
    from tests.fixtures.ffmpeg import make

    path = folder / "source.mp4"
    make("-f", "lavfi", "-i", "testsrc=s=32x32:r=30000/1001", "-f", "lavfi", "-i", "sine=f=440:duration=3",
         "-frames:v", str(frames), "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", str(path))
    return path


class ForgeUnit:
    """Forge's built-in ControlNet's ``ControlNetUnit`` as far as AnimateDiff reads and writes it (no
    ``batch_images``, no ``animatediff_batch``: its batch folder is ``batch_image_dir``)."""

    def __init__(self, **kw: Any) -> None:
        self.enabled, self.image, self.input_mode, self.batch_image_dir, self.module = True, None, "simple", "", "None"
        self.batch_mask_dir, self.batch_input_gallery = "", None
        self.__dict__.update(kw)


def test_forge_units_get_their_frames_in_batch_image_dir(tmp_path: Path) -> None:
    """Forge's layout: a unit's own folder is read from ``batch_image_dir`` (no keyframe lines there), the
    staged frames go back there; a unit without input reads video_path; an IP-Adapter preprocessor is refused."""
    from motion_module.control.controlnet import FORGE_UNITS, prepare

    own, video = frames_dir(tmp_path / "own", 6), frames_dir(tmp_path / "video", 9)
    slots = [(3, ForgeUnit(input_mode="batch", batch_image_dir=f" {own} ")), (4, ForgeUnit()),
             (5, ForgeUnit(image="single image")), (6, ForgeUnit(enabled=False))]
    params = AnimateDiffParams(enable=True, video_path=str(video))
    v2v = prepare(params, slots, work_dir=lambda: tmp_path / "work", allowed_roots=[tmp_path], batch_mode="BATCH",
                  layout=FORGE_UNITS)
    assert v2v.frames == 6 and sorted(v2v.units) == [3, 4]  # the shortest source: the unit's own folder
    for slot, source in ((3, own), (4, video)):
        unit = v2v.units[slot]
        assert unit.input_mode == "BATCH" and not hasattr(unit, "animatediff_batch") and unit.batch_mask_dir is None
        staged = sorted(Path(unit.batch_image_dir).iterdir())
        assert [p.resolve() for p in staged] == [(source / f"{i}.png").resolve() for i in range(6)]
    assert slots[0][1].batch_image_dir == f" {own} " and slots[1][1].input_mode == "simple"  # originals untouched
    ip = [(0, ForgeUnit(module="InsightFace+CLIP-H (IPAdapter)"))]
    with pytest.raises(ParameterError, match="IP-Adapter unit.*Forge's built-in ControlNet") as caught:
        prepare(params, ip, work_dir=lambda: tmp_path / "w", allowed_roots=[tmp_path], batch_mode="BATCH",
                layout=FORGE_UNITS)
    assert caught.value.field == "video_path"


def test_prepare_decodes_the_video_source_and_stages_each_units_frames(tmp_path: Path):
    from motion_module.control.controlnet import prepare

    video = ntsc_video_with_sound(tmp_path)
    frames = frames_dir(tmp_path / "own", 20)
    for i in (2, 11):  # unpadded names: 2 before 10 in natural order, after it in ControlNet's plain order
        assert (frames / f"{i}.png").is_file()
    slots = [(5, Unit(enabled=False)), (6, Unit()), (7, Unit(input_mode="batch", batch_images=f"{frames}\nmask:x")),
             (8, Unit(image="single image"))]
    params = AnimateDiffParams(enable=True, video_source=str(video), fps=0)
    v2v = prepare(params, slots, work_dir=lambda: tmp_path / "work", allowed_roots=[tmp_path], batch_mode="BATCH")
    assert v2v.frames == 20 and v2v.source_fps == Fraction(30000, 1001) and v2v.audio == video.resolve()
    assert sorted(v2v.units) == [6, 7] and slots[1][1].animatediff_batch is False  # copies, originals untouched
    for slot in (6, 7):
        unit = v2v.units[slot]
        staged = sorted(Path(unit.batch_images).iterdir())
        assert (unit.input_mode, unit.animatediff_batch, unit.batch_mask_dir, len(staged)) == ("BATCH", True, None, 20)
    own = [p.resolve().name for p in sorted(Path(v2v.units[7].batch_images).iterdir())]
    assert own == [f"{i}.png" for i in range(20)]  # natural order, staged as 00000.png...
    assert len(list((tmp_path / "work" / "video").iterdir())) == 30  # video_length 0: every frame decoded
    quiet = prepare(params.replace_field("keep_audio", False), slots[1:2], work_dir=lambda: tmp_path / "w2",
                    allowed_roots=[tmp_path], batch_mode="BATCH")
    assert quiet.audio is None and quiet.frames == 30


def test_prepare_refuses_paths_outside_the_allowed_folders(tmp_path: Path):
    from motion_module.control.controlnet import prepare

    inside, outside = tmp_path / "inside", frames_dir(tmp_path / "outside", 4)
    inside.mkdir()
    for field in ("video_path", "mask_path"):
        with pytest.raises(ParameterError, match=f"'{field}'.*outside the folders"):
            prepare(AnimateDiffParams(enable=True, **{field: str(outside)}), [(0, Unit())],
                    work_dir=lambda: tmp_path / "w", allowed_roots=[inside], batch_mode="BATCH")
    with pytest.raises(ParameterError, match="video_source"):
        prepare(AnimateDiffParams(enable=True, video_source=str(tmp_path / "x.mp4")), [(0, Unit())],
                work_dir=lambda: tmp_path / "w", allowed_roots=[inside], batch_mode="BATCH")
    for value, reason in ((inside / "missing.mp4", "does not exist"), (frames_dir(inside / "frames", 2), "folder")):
        with pytest.raises(ParameterError, match=f"'video_source'.*{reason}") as caught:  # inside, but no video
            prepare(AnimateDiffParams(enable=True, video_source=str(value)), [(0, Unit())],
                    work_dir=lambda: tmp_path / "w", allowed_roots=[inside], batch_mode="BATCH")
        assert caught.value.status_code == 422
    unused = prepare(AnimateDiffParams(enable=True, video_source=str(tmp_path / "x.mp4"), video_length=6),
                     [(0, Unit(image="own"))], work_dir=lambda: tmp_path / "w", allowed_roots=[inside],
                     batch_mode="BATCH")
    assert (unused.frames, unused.units, unused.notes) == (6, {}, ())  # no unit needs the video: not read at all
    made: list[Path] = []
    alone = prepare(AnimateDiffParams(enable=True, video_path=str(inside)), [(0, Unit(enabled=False))],
                    work_dir=lambda: made.append(tmp_path) or tmp_path, allowed_roots=[inside], batch_mode="BATCH")
    assert "no ControlNet unit is enabled" in alone.notes[0] and made == []  # said, and no folder was made
    batch = prepare(AnimateDiffParams(enable=True), [], work_dir=lambda: tmp_path / "w", allowed_roots=[inside],
                    batch_mode="BATCH", init_frames=5)
    assert batch.frames == 5  # the img2img batch images set the length when video_length is 0
    with pytest.raises(ParameterError, match="img2img batch images"):
        prepare(AnimateDiffParams(enable=True, video_length=9), [], work_dir=lambda: tmp_path / "w",
                allowed_roots=[inside], batch_mode="BATCH", init_frames=5)
