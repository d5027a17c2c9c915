"""AnimateDiff's Settings page and X/Y/Z-plot axes (host registration only; UI mode and --nowebui alike).

Imports nothing from the other files in scripts/: the settings and the axes are data in the engine
(`settings.SETTINGS`, `ui_spec.setting_control`, `param_fields.add_xyz_axes`).
"""

from pathlib import Path

import gradio as gr
from modules import script_callbacks, scripts, shared

from motion_module.files.model_files import list_motion_modules, model_root
from motion_module.params import settings, ui_spec
from motion_module.params.fields import add_xyz_axes, xyz_script_module

EXTENSION_DIR = Path(__file__).resolve().parent.parent


def on_ui_settings() -> None:
    for setting in settings.SETTINGS:
        component, args = ui_spec.setting_control(setting)
        shared.opts.add_option(setting.key, shared.OptionInfo(
            setting.default, setting.label, getattr(gr, component) if component else None, args,
            section=("animatediff", "AnimateDiff")))


def _models() -> list[str]:
    return list_motion_modules(model_root(settings.model_folder(shared.opts.data.get), EXTENSION_DIR / "model"))


def register_xyz_axes() -> None:
    """The X/Y/Z-plot axes (``param_fields.add_xyz_axes``: each added once, however often this runs)."""
    xyz = xyz_script_module(scripts.scripts_data)
    if xyz is not None:
        add_xyz_axes(xyz, _models)


script_callbacks.on_ui_settings(on_ui_settings)
# The X/Y/Z script copies its axis list in ui(), which WebUI calls from ui.create_ui(): at start-up in UI mode,
# and from the API's constructor with --nowebui (on_before_ui only runs after that there). So: now, as WebUI
# loads its own scripts/ (xyz_grid.py) before any extension's; and again from create_ui(), which calls the
# on_ui_settings callbacks before any script's ui() (both modes), whatever the load order was.
register_xyz_axes()
script_callbacks.on_ui_settings(register_xyz_axes)
