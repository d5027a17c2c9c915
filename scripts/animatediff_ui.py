"""The AnimateDiff panel reads an uploaded video source: FPS becomes its exact rate, and a line under the video
shows its frame count, rate and sound (host wiring only; `ui_spec.video_source_panel` probes and words it).

Attached from outside the Script: WebUI calls `on_after_component` for every component it builds; our panel's
controls are recognised by their elem_id (`ui_spec.panel_element`). FPS is built before the video source on each
tab, so the video's handler can name it.
"""

from typing import Any

import gradio as gr
from modules import script_callbacks

from motion_module.params import ui_spec

_fps: dict[str, Any] = {}  # tab -> its FPS control, until that tab's video source is built


def _read_video(path: Any) -> tuple[Any, str]:
    fps, text = ui_spec.video_source_panel(path if isinstance(path, str) else None)
    return (gr.update() if fps is None else gr.update(value=fps)), text


def on_after_component(component: Any, **kwargs: Any) -> None:
    found = ui_spec.panel_element(kwargs.get("elem_id"))
    if found is None:
        return
    tab, name = found
    if name == "fps":
        _fps[tab] = component
    elif name == "video_source" and tab in _fps and isinstance(component, gr.Video):
        kind, control = ui_spec.video_info_control(kwargs["elem_id"])
        info = getattr(gr, kind)(**control)  # right under the video, in its accordion
        component.change(fn=_read_video, inputs=[component], outputs=[_fps.pop(tab), info], show_progress="hidden")


script_callbacks.on_after_component(on_after_component)
