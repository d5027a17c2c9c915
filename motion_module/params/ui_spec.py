"""What the WebUI panel shows, as data: one control per parameter, in groups, and the settings' controls.

Nothing here imports gradio: each control is described as ``(component class name, keyword arguments)``
and the adapter builds it with ``getattr(gradio, name)(**kwargs)``. The order of the controls is the
order of ``param_fields.FIELDS`` (the positional API order), whatever the grouping.
"""

from __future__ import annotations

import html
import os
import re
from dataclasses import dataclass
from typing import Any

from motion_module.errors import AnimateDiffError
from motion_module.files.model_files import default_motion_module
from motion_module.params.fields import FIELDS, FieldSpec
from motion_module.params.settings import Setting
from motion_module.video.input import format_rate, video_summary

GROUP_TITLES = {"context": "Context windows", "freeinit": "FreeInit", "img2img": "Image to video",
                "controlnet": "Video input (for ControlNet)", "interp": "Frame interpolation"}
SLIDER_MAX_SPAN = 128  # wider numeric ranges get a number box instead of a slider


@dataclass(frozen=True)
class Group:
    """A block of the panel: ``title`` None is a plain row, else a closed accordion. ``hidden`` fields
    have no control on this tab (API-only, img2img-only on txt2img): they get a state slot."""

    title: str | None
    shown: tuple[FieldSpec, ...]
    hidden: tuple[FieldSpec, ...]


def groups(is_img2img: bool) -> list[Group]:
    """The panel's groups after the enable switch, in field order."""
    by_name: dict[str, list[FieldSpec]] = {}
    for spec in FIELDS[1:]:
        by_name.setdefault(spec.group, []).append(spec)
    return [Group(GROUP_TITLES.get(name), tuple(s for s in specs if s.shown(is_img2img)),
                  tuple(s for s in specs if not s.shown(is_img2img))) for name, specs in by_name.items()]


def _numeric(spec: FieldSpec, value: Any, common: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    if spec.minimum is not None and spec.maximum is not None and spec.step \
            and spec.maximum - spec.minimum <= SLIDER_MAX_SPAN:
        return "Slider", {"minimum": spec.minimum, "maximum": spec.maximum, "step": spec.step, "value": value,
                          **common}
    return "Number", {"value": value, "precision": 0 if spec.kind == "int" else None, **common}


def control(spec: FieldSpec, is_img2img: bool, elem_id: str, models: list[str] | None = None
            ) -> tuple[str, dict[str, Any]]:
    """The gradio component (class name, kwargs) for ``spec`` on the txt2img or img2img tab.

    ``models``: the motion-module files to offer (for the model field only).
    """
    value = spec.to_ui(spec.default)
    if not spec.shown(is_img2img):
        return "State", {"value": value}
    common: dict[str, Any] = {"label": spec.label, "elem_id": elem_id, "elem_classes": ["animatediff-field"]}
    info = spec.help if spec.name == "closed_loop" else spec.short_help
    if spec.kind == "image":
        return "Image", {"type": "pil", "image_mode": "RGB", **common}
    if spec.name == "video_source":
        return "Video", common
    common["info"] = info
    if spec.kind == "bool":
        return "Checkbox", {"value": value, **common}
    if spec.kind == "model":
        found = list(models or [])
        return "Dropdown", {"choices": found, "value": default_motion_module(found), "allow_custom_value": True,
                            "scale": 3, "min_width": 280, **common}
    if spec.kind == "formats":
        common["info"] = "PNG = a folder of frames; TXT = the parameters"
        return "CheckboxGroup", {"choices": [c for c in spec.choices if c != "Frame"], "value": value, **common}
    if spec.kind == "choice":
        return "Radio", {"choices": list(spec.choices), "value": value, **common}
    if spec.kind in ("int", "float"):
        return _numeric(spec, value, common)
    return "Textbox", {"value": value, **common}


# ----- the panel reading an uploaded video source ------------------------------------------------------------
_PANEL_ELEM = re.compile(r"^script_(txt2img|img2img)_animatediff_(\w+)$")  # Script.elem_id(name) of our panel
VIDEO_INFO_SUFFIX = "_info"  # the display under the video source: its elem_id is the video's + this


def panel_element(elem_id: str | None) -> tuple[str, str] | None:
    """(tab, field name) of one of the panel's controls from its elem_id ("script_txt2img_animatediff_fps" ->
    ("txt2img", "fps")), or None for any other component."""
    match = _PANEL_ELEM.match(elem_id or "")
    return None if match is None else (match.group(1), match.group(2))


def video_info_control(video_elem_id: str) -> tuple[str, dict[str, Any]]:
    """The display right under the video source (frames, rate, sound of the uploaded video): empty until then."""
    return "HTML", {"value": "", "elem_id": video_elem_id + VIDEO_INFO_SUFFIX,
                    "elem_classes": ["animatediff-hint", "animatediff-video-info"]}


def video_source_panel(path: str | os.PathLike[str] | None) -> tuple[float | None, str]:
    """What the panel does when a video source is uploaded (or cleared): the FPS to set (the video's exact rate
    as a float, which ``output_fps`` reads back as that exact rate; None leaves FPS as it is) and the HTML of
    the display under it: the frame count, the rate (exact: "29.97 (30000/1001)") and the sound."""
    if not path:
        return None, ""
    try:
        found = video_summary(path)
    except AnimateDiffError as error:
        return None, f"<span>Cannot read this video: {html.escape(str(error))}</span>"
    sound = "with audio (kept in MP4/WEBM at this FPS)" if found.has_audio else "no audio"
    if found.fps is None:
        text = f"{found.frames} frames, {found.size[0]}x{found.size[1]}, no frame rate given (FPS left as is), {sound}"
        return None, f"<span>Video source: {html.escape(text)}</span>"
    text = f"{found.frames} frames at {format_rate(found.fps)} fps, {found.size[0]}x{found.size[1]}, {sound}"
    return float(found.fps), f"<span>Video source: {html.escape(text)}; FPS set to its rate</span>"


def setting_control(setting: Setting) -> tuple[str | None, dict[str, Any] | None]:
    """The settings page's component for ``setting`` (None: WebUI's default for the value's type)."""
    controls: dict[str, tuple[str | None, dict[str, Any] | None]] = {
        "slider": ("Slider", {"minimum": setting.minimum, "maximum": setting.maximum, "step": 1}),
        "choice": ("Dropdown", {"choices": list(setting.choices)}),
        "number": ("Number", {"precision": 0}),
        "password": ("Textbox", {"type": "password"}),
    }
    return controls.get(setting.kind, (None, None))


__all__ = ["GROUP_TITLES", "VIDEO_INFO_SUFFIX", "Group", "control", "groups", "panel_element", "setting_control",
           "video_info_control", "video_source_panel"]
