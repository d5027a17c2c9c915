"""AnimateDiff for AUTOMATIC1111 WebUI 1.9+/1.10 and Forge: the only Script, a thin host layer over `motion_module`.

One engine call per hook, into the request session (`motion_module.session`): before_process starts the request
(parse, plan once, set up `p` through the request's owner of changes), on_cfg_denoiser runs the windows,
process_before_every_sampling (Forge) patches the sampling's UNet, postprocess writes the videos. What differs
between the hosts is `HOST` (`animatediff_hosts`: A1111 or Forge)."""

from pathlib import Path
from typing import Any

import gradio as gr
from modules import script_callbacks, scripts
from modules.ui_components import InputAccordion, ToolButton

import animatediff_hosts as hosts
from motion_module.core import session
from motion_module.params import infotext as mm_infotext
from motion_module.params import ui_spec
from motion_module.params.fields import FIELDS

HOST = hosts.for_webui(Path(__file__).resolve().parent.parent)


# ----- the script ----------------------------------------------------------------------------------
class AnimateDiffScript(scripts.Script):
    """Turns a batch into the frames of a video."""

    def title(self) -> str:
        return "AnimateDiff"

    def show(self, is_img2img: bool) -> Any:
        return scripts.AlwaysVisible

    def ui(self, is_img2img: bool) -> list[Any]:
        from modules.infotext_utils import PasteField

        def build(spec: Any) -> Any:
            name, kwargs = ui_spec.control(spec, is_img2img, self.elem_id(spec.name),
                                           HOST.list_models() if spec.kind == "model" else None)
            made[spec.name] = getattr(gr, name)(**kwargs)
            if spec.kind == "model" and name != "State":
                refresh = ToolButton("\U0001f504", elem_id=self.elem_id("refresh_models"))
                refresh.click(fn=lambda: gr.update(choices=HOST.list_models()), inputs=[], outputs=[made[spec.name]])

        made: dict[str, Any] = {}
        with InputAccordion(False, label="AnimateDiff", elem_id=self.elem_id("enable")) as made["enable"]:
            gr.HTML(f'<div class="animatediff-hint" id="{self.elem_id("hint")}"></div>')
            for group in ui_spec.groups(is_img2img):
                for spec in group.hidden:
                    build(spec)
                if group.shown:
                    with gr.Accordion(group.title, open=False, elem_classes=["animatediff-group"]) if group.title \
                            else gr.Row(elem_classes=["animatediff-row"]):
                        for spec in group.shown:
                            build(spec)
        pasted = [name for name in mm_infotext.PASTE_FIELDS if not isinstance(made[name], gr.State)]
        self.infotext_fields = [PasteField(made[n], lambda d, n=n: mm_infotext.paste_value(d, n)) for n in pasted]
        self.paste_field_names = [mm_infotext.PASTE_PREFIX + name for name in pasted]
        return [made[spec.name] for spec in FIELDS]

    def before_process(self, p: Any, *args: Any) -> None:
        session.start(p, args, HOST)

    def process_before_every_sampling(self, p: Any, *args: Any, **kwargs: Any) -> None:
        """Forge: the motion modules and windows go into this sampling's clone of the UNet patcher."""
        session.before_every_sampling(p)

    def postprocess(self, p: Any, processed: Any, *args: Any) -> None:
        session.postprocess(p, processed)


script_callbacks.on_cfg_denoiser(session.on_cfg_denoiser)
