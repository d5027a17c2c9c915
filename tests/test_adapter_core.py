"""What the WebUI adapter asks the engine, without WebUI: settings, model files, the panel's controls,
host checks, the Lightning hint, pasting, and the HTTP status A1111 answers an error with."""

from __future__ import annotations

import os
import types
from pathlib import Path
from typing import Any

import pytest

from motion_module.core.run import HostState, check_host, lightning_hint
from motion_module.errors import IncompatibleModelError, OutputError, ParameterError, TooManyFramesError
from motion_module.files.model_files import default_motion_module, list_motion_modules, resolve_motion_module
from motion_module.params import infotext, settings, ui_spec
from motion_module.params.fields import FIELDS, XYZ_ATTRIBUTE, XYZ_FIELDS, add_xyz_axes, xyz_script_module
from motion_module.params.request import AnimateDiffParams
from motion_module.video.encoders import EncodeOptions


def test_settings_defaults_are_the_encoders_defaults_and_upload_is_off():
    get = settings.DEFAULTS.get
    assert settings.encode_options(lambda k, d: d, fps=8.0, loop=0) == EncodeOptions(fps=8.0, loop=0)
    assert settings.encode_options(get, fps=8.0, loop=0) == EncodeOptions(fps=8.0, loop=0)
    assert settings.s3_options(get) is None and settings.max_rows(get) is None and settings.model_folder(get) == ""
    values = {"animatediff_s3_enable": True, "animatediff_s3_endpoint": "http://127.0.0.1:9000",
              "animatediff_s3_bucket": "videos", "animatediff_mp4_preset": "slow", "animatediff_max_rows": 48}
    chosen = values.get
    s3 = settings.s3_options(lambda k, d: chosen(k, d))
    assert s3 is not None and (s3.endpoint, s3.bucket, s3.prefix) == ("http://127.0.0.1:9000", "videos", "animatediff/")
    assert settings.encode_options(lambda k, d: chosen(k, d), fps=12, loop=2).mp4_preset == "slow"
    assert settings.max_rows(lambda k, d: chosen(k, d)) == 48
    assert len({s.key for s in settings.SETTINGS}) == len(settings.SETTINGS)
    for setting in settings.SETTINGS:
        component, args = ui_spec.setting_control(setting)
        if setting.kind == "choice":
            assert component == "Dropdown" and args and setting.default in args["choices"]
        if setting.kind == "slider":
            assert args and args["minimum"] <= setting.default <= args["maximum"]


def test_model_files_are_listed_chosen_and_kept_inside_the_folder(tmp_path: Path):
    root = tmp_path / "models"
    (root / "sub").mkdir(parents=True)
    for name in ("b.safetensors", "A.ckpt", "sub/c.pt", "notes.txt"):
        (root / name).write_bytes(b"x")
    (tmp_path / "secret.safetensors").write_bytes(b"x")
    os.symlink(tmp_path / "secret.safetensors", root / "link.safetensors")
    assert list_motion_modules(root) == ["A.ckpt", "b.safetensors", "link.safetensors", "sub/c.pt"]
    assert list_motion_modules(tmp_path / "missing") == []
    assert default_motion_module(["x.ckpt", "mm_sd15_v3.safetensors"]) == "mm_sd15_v3.safetensors"
    assert default_motion_module([]) == ""
    assert resolve_motion_module(root, "") == ((root / "A.ckpt").resolve(), "A.ckpt")
    assert resolve_motion_module(root, "sub/c.pt")[1] == "sub/c.pt"
    for name in ("../secret.safetensors", str(tmp_path / "secret.safetensors"), "link.safetensors"):
        with pytest.raises(ParameterError, match="outside the model folder"):
            resolve_motion_module(root, name)
    with pytest.raises(ParameterError, match="not found.*Available: A.ckpt"):
        resolve_motion_module(root, "nope.safetensors")
    with pytest.raises(ParameterError, match="no motion module found"):
        resolve_motion_module(tmp_path / "empty", "")


@pytest.mark.parametrize("is_img2img", [False, True])
def test_every_field_has_one_control_in_field_order(is_img2img: bool):
    groups = ui_spec.groups(is_img2img)
    placed = [s.name for g in groups for s in (*g.hidden, *g.shown)]
    assert sorted(placed) == sorted(f.name for f in FIELDS[1:])
    for spec in FIELDS[1:]:
        name, kwargs = ui_spec.control(spec, is_img2img, f"id-{spec.name}", ["m.safetensors"])
        assert (name == "State") == (not spec.shown(is_img2img)), spec.name
        if name != "State":
            assert kwargs["elem_id"] == f"id-{spec.name}" and kwargs["label"] == spec.label
        if spec.name == "context":
            assert name == "Slider" and kwargs["maximum"] == spec.maximum
        if spec.name == "video_length":
            assert name == "Number" and kwargs["precision"] == 0  # 0..10000 is too wide for a slider
        if spec.kind == "model":
            assert kwargs["choices"] == ["m.safetensors"] and kwargs["value"] == "m.safetensors"
    shown = {s.name for g in groups for s in g.shown}
    assert ("latent_power" in shown) == is_img2img and "request_id" not in shown
    assert {"interp", "interp_x", "interp_fps"} <= shown
    assert [g.title for g in groups if g.title] == ["Context windows", "FreeInit", "Image to video",
                                                    "Video input (for ControlNet)", "Frame interpolation"]
    interp = next(g for g in groups if g.title == "Frame interpolation")
    assert [s.name for s in interp.shown] == ["interp", "interp_x", "interp_fps"]


def test_xyz_axes():
    names = {spec.name for spec in XYZ_FIELDS}
    assert {"model", "context", "closed_loop", "fps"} <= names and not names & {"last_frame", "formats", "enable"}
    closed = next(s for s in XYZ_FIELDS if s.name == "closed_loop")
    assert closed.xyz_type is str and closed.xyz_choices() == ["N", "R-P", "R+P", "A"]
    assert next(s for s in XYZ_FIELDS if s.name == "fps").xyz_type is float


class AxisOption:
    """WebUI 1.10.1's scripts/xyz_grid.py AxisOption constructor (the module is WebUI's, so a stand-in here)."""

    def __init__(self, label: str, type: type, apply: Any, format_value: Any = None, confirm: Any = None,
                 cost: float = 0.0, choices: Any = None, prepare: Any = None) -> None:
        self.label, self.type, self.apply, self.choices = label, type, apply, choices


def _xyz_module() -> types.ModuleType:
    """A stand-in for the loaded ``xyz_grid.py`` script module: its ``axis_options`` list and ``AxisOption``."""
    module = types.ModuleType("xyz_grid.py")
    module.AxisOption = AxisOption  # type: ignore[attr-defined]
    module.axis_options = [AxisOption("Nothing", str, None), AxisOption("Seed", int, None),  # type: ignore[attr-defined]
                           AxisOption("[ControlNet] Weight", str, None)]
    return module


def test_xyz_axes_are_added_once_from_any_number_of_registration_points():
    xyz = _xyz_module()
    script_class = type("Script", (), {"__module__": "xyz_grid.py"})
    other = type("Script", (), {"__module__": "animatediff.py"})
    entries = [types.SimpleNamespace(script_class=other, module=None),
               types.SimpleNamespace(script_class=script_class, module=xyz)]
    assert xyz_script_module(entries) is xyz and xyz_script_module(entries[:1]) is None
    models = ["a.safetensors", "b.ckpt"]
    labels = [f"[AnimateDiff] {spec.label}" for spec in XYZ_FIELDS]
    # at import (UI mode and --nowebui), then again from create_ui's on_ui_settings: the second adds nothing
    assert add_xyz_axes(xyz, lambda: models) == labels
    assert add_xyz_axes(xyz, lambda: models) == []
    assert [a.label for a in xyz.axis_options] == ["Nothing", "Seed", "[ControlNet] Weight", *labels]
    del xyz.axis_options[4]  # a missing one is added back alone, after the others
    assert add_xyz_axes(xyz, lambda: models) == [labels[1]] and len(xyz.axis_options) == 3 + len(labels)
    axes = {a.label.removeprefix("[AnimateDiff] "): a for a in xyz.axis_options[3:]}
    scale, loop = axes["Motion scale"], axes["Closed loop"]
    assert (scale.type, scale.choices, axes["Context length"].type) == (float, None, int)
    assert axes["Motion module"].choices() == models and axes["FreeNoise"].choices() == ["True", "False"]
    assert loop.type is str and loop.choices() == ["N", "R-P", "R+P", "A"]
    p = types.SimpleNamespace()  # as the X/Y/Z script's cells apply their axes, then before_process reads them
    scale.apply(p, 0.0, [0.0, 1.0])
    loop.apply(p, "N", ["N", "A"])
    axes["Context length"].apply(p, 8, [8, 12])
    params = AnimateDiffParams()
    for name, value in getattr(p, XYZ_ATTRIBUTE).items():
        params = params.replace_field(name, value)
    assert (params.motion_scale, params.closed_loop.value, params.context) == (0.0, "N", 8)


@pytest.mark.parametrize(("state", "field"), [
    (HostState(upscale_button=True), "enable"), (HostState(refiner=True), "refiner"),
    (HostState(hires_checkpoint=True), "hr_checkpoint_name"), (HostState(custom_unet=True), "sd_unet"),
])
def test_host_checks_name_the_setting(state: HostState, field: str):
    with pytest.raises(ParameterError) as caught:
        check_host(state, AnimateDiffParams())
    assert caught.value.field == field


def test_host_checks_sd3_and_freeinit():
    check_host(HostState(img2img=True, hires=True), AnimateDiffParams())
    with pytest.raises(IncompatibleModelError, match="SD3"):
        check_host(HostState(no_unet=True), AnimateDiffParams())
    for state in (HostState(img2img=True), HostState(hires=True)):
        with pytest.raises(ParameterError, match="FreeInit works in txt2img"):
            check_host(state, AnimateDiffParams(freeinit_enable=True))


def test_lightning_hint():
    assert lightning_hint(20, "DPM++ 2M", "Karras", 7.0) is None
    assert lightning_hint(4, "Euler", "SGM Uniform", 1.0) is None
    assert lightning_hint(4, "Euler", "sgm_uniform", 1.0) is None
    note = lightning_hint(4, "Euler a", "Automatic", 7.0)
    assert note is not None and "4 steps" in note and "SGM Uniform" in note


def test_paste_value():
    entry = 'enable: True, model: mm.safetensors, video_length: 12, closed_loop: "R+P"'
    params = {infotext.INFOTEXT_KEY: entry}
    assert infotext.paste_value(params, "video_length") == 12
    assert infotext.paste_value(params, "closed_loop") == "R+P"
    assert infotext.paste_value({**params, "AnimateDiff fps": 30}, "fps") == 30  # expanded keys win
    assert infotext.paste_value({"Steps": "20"}, "enable") is False  # no entry: AnimateDiff off
    assert infotext.paste_value({"Steps": "20"}, "fps") is None
    assert infotext.paste_value({infotext.INFOTEXT_KEY: 'video_length: "unterminated'}, "video_length") is None


def test_a1111_answers_client_mistakes_with_422_and_the_message():
    """A1111 1.10's API answers an exception with vars(e).get("status_code", 500) and vars(e)["detail"]."""
    for error in (ParameterError("video_length", "must be >= 0"), IncompatibleModelError("SDXL module"),
                  TooManyFramesError("too many")):
        assert vars(error)["status_code"] == 422 and vars(error)["detail"] == str(error)
    assert "video_length" in vars(ParameterError("video_length", "x"))["detail"]
    assert vars(OutputError("disk full"))["status_code"] == 500


def test_input_roots(tmp_path: Path):
    import tempfile

    folders = f"{tmp_path / 'a'}\n\n  {tmp_path / 'b'} "
    values = {"temp_dir": str(tmp_path / "uploads"), "animatediff_input_folders": folders}
    roots = settings.input_roots(lambda k, d: values.get(k, d), tmp_path / "data")
    assert roots == [tmp_path / "data", Path(tempfile.gettempdir()) / "gradio", tmp_path / "uploads", tmp_path / "a",
                     tmp_path / "b"]
    assert settings.input_roots(lambda k, d: d, tmp_path) == [tmp_path, Path(tempfile.gettempdir()) / "gradio"]


def test_modules_loaded_without_the_cache_are_fresh_and_the_cache_is_emptied(tmp_path: Path):
    from motion_module.files import loading
    from tests.fixtures.motion_modules import build_state_dict, write_checkpoint

    path = tmp_path / "m.safetensors"
    write_checkpoint(path, build_state_dict("v2", seed=1), "safetensors")
    channels = (32, 64, 128, 128)
    cached = loading.load_for_unet(path, "sd15", channels)
    assert loading.load_for_unet(path, "sd15", channels) is cached
    fresh = loading.load_for_unet(path, "sd15", channels, cached=False)
    assert fresh is not cached and loading.load_for_unet(path, "sd15", channels) is not cached  # emptied
    assert settings.DEFAULTS["animatediff_keep_models"] is True


def test_the_panel_finds_its_controls_by_elem_id_fps_before_the_video():
    assert ui_spec.panel_element("script_txt2img_animatediff_fps") == ("txt2img", "fps")
    assert ui_spec.panel_element("script_img2img_animatediff_video_source") == ("img2img", "video_source")
    for other in ("script_txt2img_controlnet_fps", "txt2img_animatediff_fps", None, ""):
        assert ui_spec.panel_element(other) is None
    kind, kwargs = ui_spec.video_info_control("script_txt2img_animatediff_video_source")
    assert kind == "HTML" and kwargs["value"] == "" and "animatediff-hint" in kwargs["elem_classes"]
    assert kwargs["elem_id"] == "script_txt2img_animatediff_video_source_info"
    for is_img2img in (False, True):  # the video's handler names FPS, so FPS is built first on both tabs
        built = [s.name for g in ui_spec.groups(is_img2img) for s in g.shown]
        assert built.index("fps") < built.index("video_source")
        video = next(s for s in FIELDS if s.name == "video_source")
        assert ui_spec.control(video, is_img2img, "v")[0] == "Video"


def test_an_uploaded_video_sets_fps_to_its_exact_rate_and_shows_its_frames(tmp_path: Path):
    from fractions import Fraction

    from motion_module.video.input import output_fps
    from tests.fixtures.ffmpeg import make

    clip, ntsc = tmp_path / "clip.mp4", tmp_path / "ntsc.mp4"
    make("-f", "lavfi", "-i", "color=c=red:s=64x48:r=12", "-f", "lavfi", "-i", "sine=f=440:duration=2",
         "-frames:v", "18", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", str(clip))
    make("-f", "lavfi", "-i", "color=c=blue:s=32x32:r=30000/1001", "-frames:v", "7", "-c:v", "libx264",
         "-pix_fmt", "yuv420p", str(ntsc))
    fps, text = ui_spec.video_source_panel(str(clip))
    assert fps == 12.0 and "18 frames at 12 fps, 64x48, with audio" in text and "FPS set to its rate" in text
    fps, text = ui_spec.video_source_panel(str(ntsc))
    assert fps == 30000 / 1001 and "7 frames at 29.97 (30000/1001) fps" in text and "no audio" in text
    assert output_fps(fps, Fraction(30000, 1001)) == Fraction(30000, 1001)  # the float reads back exactly
    assert ui_spec.video_source_panel(None) == (None, "") and ui_spec.video_source_panel("") == (None, "")
    (tmp_path / "x<y>.mp4").write_text("not a video")
    fps, text = ui_spec.video_source_panel(str(tmp_path / "x<y>.mp4"))
    assert fps is None and text.startswith("<span>Cannot read this video: ") and "x&lt;y&gt;.mp4" in text
