"""AnimateDiff's Settings page and X/Y/Z-plot axes, registered once at import (host registration only).

Imports nothing from the other files in scripts/: the settings and the axes are data in the engine
(`settings.SETTINGS`, `ui_spec.setting_control`, `param_fields.XYZ_FIELDS`).
"""

from pathlib import Path
from typing import Any

import gradio as gr
from modules import script_callbacks, scripts, shared

from motion_module import settings, ui_spec
from motion_module.model_files import list_motion_modules, model_root
from motion_module.param_fields import XYZ_ATTRIBUTE, XYZ_FIELDS

EXTENSION_DIR = Path(__file__).resolve().parent.parent


def on_ui_settings() -> None:
    for setting in settings.SETTINGS:
        component, args = ui_spec.setting_control(setting)
        shared.opts.add_option(setting.key, shared.OptionInfo(
            setting.default, setting.label, getattr(gr, component) if component else None, args,
            section=("animatediff", "AnimateDiff")))


def _models() -> list[str]:
    return list_motion_modules(model_root(settings.model_folder(shared.opts.data.get), EXTENSION_DIR / "model"))


def _setter(name: str) -> Any:
    def apply(p: Any, value: Any, _: Any) -> None:
        setattr(p, XYZ_ATTRIBUTE, {**(getattr(p, XYZ_ATTRIBUTE, None) or {}), name: value})
    return apply


def on_before_ui() -> None:
    """X/Y/Z-plot axes for the main parameters (each sets one field of this p's AnimateDiff params)."""
    xyz = next((d.module for d in scripts.scripts_data
                if d.script_class.__module__ in ("xyz_grid.py", "scripts.xyz_grid")), None)
    if xyz is None or any(str(getattr(a, "label", "")).startswith("[AnimateDiff]") for a in xyz.axis_options):
        return
    for spec in XYZ_FIELDS:
        fixed = spec.xyz_choices()
        choices = _models if spec.kind == "model" else (lambda c=fixed: c) if fixed else None
        xyz.axis_options.append(xyz.AxisOption(f"[AnimateDiff] {spec.label}", spec.xyz_type, _setter(spec.name),
                                               choices=choices))


script_callbacks.on_ui_settings(on_ui_settings)
script_callbacks.on_before_ui(on_before_ui)
