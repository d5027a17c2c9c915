"""What the WebUI panel shows, as data: one control per parameter, in groups, and the settings' controls.

Nothing here imports gradio: each control is described as ``(component class name, keyword arguments)``
and the adapter builds it with ``getattr(gradio, name)(**kwargs)``. The order of the controls is the
order of ``param_fields.FIELDS`` (the positional API order), whatever the grouping.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .model_files import default_motion_module
from .param_fields import FIELDS, FieldSpec
from .settings import Setting

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


def setting_control(setting: Setting) -> tuple[str | None, dict[str, Any] | None]:
    """The settings page's component for ``setting`` (None: WebUI's default for the value's type)."""
    controls: dict[str, tuple[str | None, dict[str, Any] | None]] = {
        "slider": ("Slider", {"minimum": setting.minimum, "maximum": setting.maximum, "step": 1}),
        "choice": ("Dropdown", {"choices": list(setting.choices)}),
        "number": ("Number", {"precision": 0}),
        "password": ("Textbox", {"type": "password"}),
    }
    return controls.get(setting.kind, (None, None))


__all__ = ["GROUP_TITLES", "Group", "control", "groups", "setting_control"]
