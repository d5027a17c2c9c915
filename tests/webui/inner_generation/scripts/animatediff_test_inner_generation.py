"""Test-only WebUI extension (linked into the live tier's data dir, never shipped): an always-on script that
runs a nested generation for every finished image the way ADetailer (github.com/Bing-su/adetailer) does, so the
live tier can check that AnimateDiff stays out of such inner generations.

Like ADetailer, from `postprocess_image` it builds a new img2img `p` from the outer one (batch size 1, the frame
as init image, an inpainting mask, the frame's seed and prompt), gives it a shallow copy of the outer script
runner and of every script argument (AnimateDiff's still enabled), runs `process_images` on a copy of it and
puts the first result back into `pp.image`. Also like ADetailer, it hands a copy of the outer `p` and an empty
`Processed` to every script's `postprocess` before the first image's inner generation, and a copy of the outer
`p` to every script's `before_process` and `process` after the last image's. The outer script runner is not
filtered (ADetailer does that only when "apply only selected scripts" is on, and users add AnimateDiff to it).

Off unless a request turns it on: alwayson_scripts {"inner generation test": {"args": [true, marker]}};
`marker` true sets ADetailer's `_ad_inner` marker on the inner `p`, false leaves only the nesting to tell.
GET /animatediff-test/inner-runs returns what each inner generation saw since the last call (and forgets it):
its batch size, the latent rows and the motion modules in the UNet at its first sampling step, how many images
it returned, and its first image as a base64 PNG.
"""

import base64
import io
from copy import copy
from typing import Any

import gradio as gr
from modules import script_callbacks, scripts
from modules.processing import Processed, StableDiffusionProcessingImg2Img, process_images
from PIL import Image, ImageDraw

RECORD_ATTR = "_animatediff_test_inner_record"
RUNS: list[dict[str, Any]] = []


def _png(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _mask(width: int, height: int) -> Image.Image:
    mask = Image.new("L", (width, height), 0)  # a detected "face": the middle of the image
    ImageDraw.Draw(mask).rectangle((width // 4, height // 4, width * 3 // 4, height * 3 // 4), fill=255)
    return mask


def _script_args_copy(args: Any) -> Any:
    copied = []
    for arg in args:
        try:
            copied.append(copy(arg))
        except TypeError:
            copied.append(arg)
    return type(args)(copied)


def _inner_p(p: Any, image: Image.Image, index: int, marker: bool) -> Any:
    i2i = StableDiffusionProcessingImg2Img(
        init_images=[image], resize_mode=0, denoising_strength=0.4, mask=None, mask_blur=4, inpainting_fill=1,
        inpaint_full_res=True, inpaint_full_res_padding=32, inpainting_mask_invert=0, sd_model=p.sd_model,
        outpath_samples=p.outpath_samples, outpath_grids=p.outpath_grids, prompt="", negative_prompt="",
        styles=p.styles, seed=p.all_seeds[index], subseed=p.all_subseeds[index],
        subseed_strength=p.subseed_strength, seed_resize_from_h=p.seed_resize_from_h,
        seed_resize_from_w=p.seed_resize_from_w, sampler_name=p.sampler_name, batch_size=1, n_iter=1,
        steps=p.steps, cfg_scale=p.cfg_scale, width=p.width, height=p.height, restore_faces=False,
        tiling=p.tiling, extra_generation_params={k: v for k, v in p.extra_generation_params.items()
                                                 if not callable(v)},
        do_not_save_samples=True, do_not_save_grid=True, override_settings={}, scheduler=p.scheduler)
    i2i.cached_c, i2i.cached_uc = [None, None], [None, None]
    i2i.scripts, i2i.script_args = copy(p.scripts), _script_args_copy(p.script_args)
    i2i._ad_disabled = True
    if marker:
        i2i._ad_inner = True
    i2i.control_net_enabled = False
    return i2i


class InnerGeneration(scripts.Script):
    def title(self) -> str:
        return "Inner generation test"

    def show(self, is_img2img: bool) -> Any:
        return scripts.AlwaysVisible

    def ui(self, is_img2img: bool) -> list[Any]:
        return [gr.Checkbox(False, visible=False), gr.Checkbox(False, visible=False)]

    def postprocess_image(self, p: Any, pp: Any, enabled: bool = False, marker: bool = False) -> None:
        if not enabled or getattr(p, "_ad_disabled", False):
            return
        index = p.iteration * p.batch_size + p.batch_index
        if p.batch_index == 0:  # ADetailer: every script's postprocess, with a copy of p and no images
            prompts = copy(p.all_prompts), copy(p.all_negative_prompts)
            p.scripts.postprocess(copy(p), Processed(p, [], p.seed, ""))
            p.all_prompts, p.all_negative_prompts = prompts
        i2i = _inner_p(p, pp.image.convert("RGB"), index, bool(marker))
        p2 = copy(i2i)
        p2.image_mask = _mask(p.width, p.height)
        p2.prompt, p2.negative_prompt = p.all_prompts[index], p.all_negative_prompts[index]
        record: dict[str, Any] = {"index": index}
        setattr(p2, RECORD_ATTR, record)
        try:
            processed = process_images(p2)
        finally:
            p2.close()
        record.update(images=len(processed.images), batch_size=p2.batch_size, result=_png(processed.images[0]))
        RUNS.append(record)
        pp.image = processed.images[0]
        if p.batch_index == p.batch_size - 1:  # ADetailer: every script's before_process and process again
            prompts = copy(p.all_prompts), copy(p.all_negative_prompts)
            copy_p = copy(p)
            p.scripts.before_process(copy_p)
            p.scripts.process(copy_p)
            p.all_prompts, p.all_negative_prompts = prompts


def on_cfg_denoiser(params: Any) -> None:
    p = getattr(params.denoiser, "p", None)
    record = getattr(p, RECORD_ATTR, None)
    if record is None or params.sampling_step != 0:
        return
    unet = p.sd_model.model.diffusion_model
    record.update(sampling_batch_size=p.batch_size, rows=int(params.x.shape[0]),
                  motion_modules=sum(type(m).__name__ == "InsertedTemporal" for m in unet.modules()))


def on_app_started(_demo: Any, app: Any) -> None:
    @app.get("/animatediff-test/inner-runs")
    def inner_runs() -> Any:
        runs = list(RUNS)
        RUNS.clear()
        return runs


script_callbacks.on_cfg_denoiser(on_cfg_denoiser)
script_callbacks.on_app_started(on_app_started)
