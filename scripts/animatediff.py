"""AnimateDiff for AUTOMATIC1111 WebUI (1.9+/1.10): the only Script; a thin adapter over `motion_module`.

Lifecycle (see README "Architecture"):
  ui()                 one component per parameter, in `param_fields.FIELDS` order (positional API order)
  before_process       parse + validate once, plan purely, set batch size / per-frame prompts / infotext,
                       wrap this p's `sample`
  p.sample wrapper     load (cached) module, `animatediff_patch(...)`: modules in, GroupNorm, beta schedule;
                       the try/finally around every UNet call; re-raises errors WebUI's hooks swallowed
  on_cfg_denoiser      one callback for all runs: per-frame prompt-travel conds, windowed inner model
  postprocess          host already restored: write videos, fix infotext, return videos to the API
Per-request state lives on `p` only; the motion-module cache is the one shared object.
"""


import base64
import datetime
import logging
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr
import torch

from modules import devices, script_callbacks, scripts, sd_samplers, shared
from modules.processing import StableDiffusionProcessingImg2Img
from modules.ui_components import InputAccordion, ToolButton

from motion_module import infotext as mm_infotext
from motion_module import latent_init, loading
from motion_module import video_files as output
from motion_module.injection import level_channels
from motion_module.errors import AnimateDiffError, IncompatibleModelError, ParameterError
from motion_module.param_fields import FIELDS, OutputFormat
from motion_module.params import AnimateDiffParams, from_script_args
from motion_module.injection import Injection
from motion_module.patch import Host, animatediff_patch
from motion_module.run import RunPlan, plan_run
from motion_module.spec import detect_spec

logger = logging.getLogger("animatediff")
EXTENSION_DIR = Path(__file__).resolve().parent.parent
MODEL_EXTENSIONS = (".safetensors", ".ckpt", ".pt", ".pth")
STATE_ATTR = "animatediff_run"
XYZ_ATTR = "animatediff_xyz"
VIDEO_ORDER = ("GIF", "MP4", "WEBP", "WEBM")
GROUP_TITLES = {"context": "Context windows", "freeinit": "FreeInit", "img2img": "Image to video",
                "controlnet": "Video input (for ControlNet)"}


def opt(key: str, default: Any) -> Any:
    """A setting of ours; `opts.data.get` works before the settings page has registered them."""
    return shared.opts.data.get(key, default)


# ----- motion-module files ------------------------------------------------------------------------
def model_dir() -> Path:
    configured = str(opt("animatediff_model_path", "") or "").strip()
    return Path(configured).expanduser() if configured else EXTENSION_DIR / "model"


def list_models() -> list[str]:
    """Motion-module files under the model folder (recursive), as paths relative to it."""
    root = model_dir()
    if not root.is_dir():
        return []
    found = [p.relative_to(root).as_posix() for p in root.rglob("*")
             if p.is_file() and p.suffix.lower() in MODEL_EXTENSIONS]
    return sorted(found, key=str.casefold)


def default_model(available: list[str]) -> str:
    """What an empty `model` means: mm_sd15_v3.safetensors if present, else the first file by name."""
    if "mm_sd15_v3.safetensors" in available:
        return "mm_sd15_v3.safetensors"
    return available[0] if available else ""


def resolve_model(name: str) -> Path:
    """The file for `name` ("" = automatic), inside the model folder; clear errors otherwise."""
    root = model_dir().resolve()
    available = list_models()
    if not name:
        if not available:
            raise ParameterError("model", f"no motion module found in {root}: download one (e.g. "
                                 "mm_sd15_v3.safetensors) into that folder or set it in Settings > AnimateDiff")
        name = default_model(available)
    path = (root / name).resolve()
    if root not in path.parents:
        raise ParameterError("model", f"{name!r} is outside the model folder {root}")
    if not path.is_file():
        shown = ", ".join(available[:10]) or "none"
        raise ParameterError("model", f"motion module {name!r} not found in {root}. Available: {shown}")
    return path


# ----- per-request state ---------------------------------------------------------------------------
@dataclass
class Run:
    """Everything one AnimateDiff request needs, attached to its `p`."""

    params: AnimateDiffParams
    plan: RunPlan | None = None
    model_name: str = ""
    model_hash: str = ""
    module: Any = None
    original_prompt: str | None = None
    error: BaseException | None = None
    handle: Injection | None = None
    wrapped: list[Any] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)


def _fail_later(p: Any, run: Run, error: BaseException) -> None:
    """WebUI swallows exceptions from script hooks; keep it and raise it from p.sample instead."""
    logger.error("AnimateDiff: %s", error)
    run.error = error
    setattr(p, STATE_ATTR, run)
    _wrap_sample(p, run)


def _check_host(p: Any) -> None:
    model = p.sd_model
    if getattr(p, "txt2img_upscale", False):
        raise ParameterError("enable", "the txt2img Upscale button works on one image; turn AnimateDiff off for it")
    unet = getattr(getattr(model, "model", None), "diffusion_model", None)
    if getattr(model, "is_sd3", False) or not hasattr(unet, "input_blocks"):
        raise IncompatibleModelError("AnimateDiff needs an SD1.5 or SDXL checkpoint (UNet); SD3 is not supported")
    if getattr(p, "refiner_checkpoint", None) and getattr(p, "refiner_switch_at", 1.0) < 1.0:
        raise ParameterError("refiner", "the refiner swaps the UNet mid-sampling, without motion modules: "
                             "turn the refiner off when AnimateDiff is on")
    hr_ckpt = getattr(p, "hr_checkpoint_name", None)
    if getattr(p, "enable_hr", False) and hr_ckpt and hr_ckpt != "Use same checkpoint":
        raise ParameterError("hr_checkpoint_name", "a different hires-fix checkpoint is not supported with "
                             "AnimateDiff: use the same checkpoint")
    try:
        from modules import sd_unet

        if sd_unet.current_unet is not None:
            raise ParameterError("sd_unet", "an alternative SD Unet (e.g. TensorRT) bypasses the motion "
                                 "modules: set Settings > SD Unet to None")
    except ImportError:  # pragma: no cover - older WebUI
        pass


def _unet_shape(p: Any) -> tuple[str, tuple[int, ...]]:
    base = "sdxl" if getattr(p.sd_model, "is_sdxl", False) else "sd15"
    return base, level_channels(p.sd_model.model.diffusion_model)


def _prepare(p: Any, run: Run) -> None:
    params = run.params
    _check_host(p)
    path = resolve_model(params.model)
    run.model_name = path.relative_to(model_dir().resolve()).as_posix()
    base, channels = _unet_shape(p)  # checked from the file's header before any weight is loaded
    loading.check_compatible(detect_spec(loading.read_state_dict(path, meta=True)), base, channels,
                             name=run.model_name)
    run.module = loading.load_motion_module_cached(path, device=devices.device, dtype=devices.dtype_unet)
    spec = run.module.spec
    run.model_hash = loading.short_hash(path)
    prompt = p.prompt if isinstance(p.prompt, str) else None
    run.plan = plan = plan_run(params, spec, prompt or "")
    output.validate_request_id(params.request_id)
    if params.freeinit_enable and (isinstance(p, StableDiffusionProcessingImg2Img) or getattr(p, "enable_hr", False)):
        raise ParameterError("freeinit_enable", "FreeInit works in txt2img without hires fix; turn FreeInit "
                             "or hires fix off (img2img: use denoising strength instead)")
    p.batch_size = plan.frames
    if plan.travel is not None:
        run.original_prompt = prompt
        p.prompt = plan.prompts(prompt or "", p.n_iter)
    p.do_not_save_grid = True
    p.do_not_save_samples = True  # frames are saved by us, per video, when PNG is asked for
    p.extra_generation_params[mm_infotext.INFOTEXT_KEY] = mm_infotext.to_infotext(
        params, model=run.model_name, model_hash=run.model_hash, schedule_used=plan.schedule.label,
        frames=plan.frames, context=plan.context, img2img=isinstance(p, StableDiffusionProcessingImg2Img))
    _lightning_hint(p, run)


def _lightning_hint(p: Any, run: Run) -> None:
    steps = int(getattr(p, "steps", 20) or 20)
    if steps > 8:
        return
    sampler = str(getattr(p, "sampler_name", "") or "")
    scheduler = str(getattr(p, "scheduler", "") or "")
    if sampler == "Euler" and scheduler.lower().replace(" ", "_") in ("sgm_uniform", "sgmuniform") \
            and getattr(p, "cfg_scale", 7.0) == 1.0:
        return
    note = (f"AnimateDiff: {steps} steps looks like AnimateDiff-Lightning; its recipe is sampler Euler, "
            "Schedule type 'SGM Uniform', CFG scale 1")
    run.comments.append(note)
    p.comment(note)
    logger.warning(note)


# ----- sampling ------------------------------------------------------------------------------------
def _wrap_sample(p: Any, run: Run) -> None:
    if "sample" in p.__dict__:
        return
    original = p.sample

    def sample(*args: Any, **kwargs: Any) -> Any:
        if run.error is not None:
            raise run.error
        return _sample(p, run, original, *args, **kwargs)

    p.sample = sample


def _sample(p: Any, run: Run, original: Any, *args: Any, **kwargs: Any) -> Any:
    plan = run.plan
    assert plan is not None
    host = Host(unet=p.sd_model.model.diffusion_model, schedule_owner=p.sd_model)
    with animatediff_patch(host, run.module, plan.context, plan.schedule.alphas_cumprod()) as patch:
        run.handle = patch.injection
        try:
            if isinstance(p, StableDiffusionProcessingImg2Img):
                # k-diffusion sigmas are fixed when a sampler is built; img2img built it in p.init(),
                # before the schedule was ours. Build it again inside the patch.
                p.sampler = sd_samplers.create_sampler(p.sampler_name, p.sd_model)
                _img2gif(p, run)
            if run.params.freeinit_enable:
                result = _freeinit(p, run, original, *args, **kwargs)
            else:
                result = original(*args, **kwargs)
            if run.error is not None:
                raise run.error
            return result
        finally:
            run.handle = None
            for inner in run.wrapped:
                inner.__dict__.pop("forward", None)
            run.wrapped.clear()


class _NoiseSource:
    """Stands in for ``p.rng``: hands out ``first`` (if given) for the initial noise, records what the
    initial noise was, and delegates every later draw (ancestral / SDE noise) to WebUI's generator."""

    def __init__(self, rng: Any, first: torch.Tensor | None = None) -> None:
        self.rng, self.first, self.initial = rng, first, None

    def next(self) -> torch.Tensor:
        if self.first is not None:
            out, self.first = self.first, None
        else:
            out = self.rng.next()
        if self.initial is None:
            self.initial = out
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self.rng, name)


def _freeinit(p: Any, run: Run, original: Any, *args: Any, **kwargs: Any) -> Any:
    """FreeInit (txt2img): sample, then restart from the low frequencies of the re-noised result mixed
    with the high frequencies of fresh noise, ``freeinit_iters`` passes in total."""
    from motion_module.freeinit import freeinit_noise, lowpass_filter

    params, plan = run.params, run.plan
    assert plan is not None
    webui_rng = p.rng
    try:
        source = p.rng = _NoiseSource(webui_rng)
        samples = original(*args, **kwargs)
        alpha_T = float(plan.schedule.alphas_cumprod()[-1])
        for iteration in range(1, params.freeinit_iters):
            if shared.state.interrupted or source.initial is None:
                break
            z = source.initial
            frames, _, height, width = z.shape
            lowpass = lowpass_filter((frames, height, width), str(params.freeinit_filter.value),
                                     d_s=params.freeinit_ds, d_t=params.freeinit_dt, device=z.device)
            generator = torch.Generator(device="cpu").manual_seed(int(p.seeds[0]) + 7919 * iteration)
            fresh = torch.randn(tuple(z.shape), generator=generator).to(z)
            noise = freeinit_noise(samples.to(z), z, fresh, alpha_T, lowpass)
            source = p.rng = _NoiseSource(webui_rng, first=noise)
            samples = original(*args, **kwargs)
        return samples
    finally:
        p.rng = webui_rng


def _encode_image(p: Any, image: Any) -> torch.Tensor:
    import numpy as np

    from modules import images
    from modules.processing import images_tensor_to_samples

    resized = images.resize_image(p.resize_mode, image.convert("RGB"), p.width, p.height)
    array = np.array(resized).astype(np.float32) / 255.0
    tensor = torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0).to(shared.device, dtype=devices.dtype_vae)
    from modules.sd_samplers_common import approximation_indexes

    return images_tensor_to_samples(tensor, approximation_indexes.get(opt("sd_vae_encode_method", "Full")),
                                    p.sd_model)


def _img2gif(p: Any, run: Run) -> None:
    """Blend the init image (and an optional last frame) into per-frame noise (features.md §3.9)."""
    plan, params = run.plan, run.params
    assert plan is not None
    init = p.init_latent
    if init is None or init.shape[0] != plan.frames:
        return
    generator = torch.Generator(device="cpu").manual_seed(int(p.seeds[0]) ^ 0x5EED)
    noise = torch.randn(tuple(init.shape), generator=generator).to(init)
    last = _encode_image(p, params.last_frame)[0].to(init) if params.last_frame is not None else None
    p.init_latent = latent_init.img2gif_init(
        init[0], noise, num_frames=plan.frames, power=params.latent_power, scale=params.latent_scale,
        last=last, power_last=params.latent_power_last, scale_last=params.latent_scale_last)


def on_cfg_denoiser(params: Any) -> None:
    """Per sampler call: per-frame travel conds, and the windowed inner model (installed once)."""
    denoiser = params.denoiser
    run: Run | None = getattr(getattr(denoiser, "p", None), STATE_ATTR, None)
    if run is None or run.handle is None or run.plan is None:
        return
    try:
        _wrap_inner_model(denoiser, run)
        rows = params.text_cond.shape[0]
        if rows != run.plan.frames:
            raise ParameterError("prompt", f"{rows} conditionings for {run.plan.frames} frames: AND / "
                                 "composable prompts cannot be animated; remove AND from the prompt")
        if run.plan.travel is not None:
            params.text_cond = run.plan.frame_conds(params.text_cond)
    except Exception as error:  # raised from the inner model / p.sample, not swallowed by WebUI
        logger.exception("AnimateDiff")
        run.error = error


def _wrap_inner_model(denoiser: Any, run: Run) -> None:
    inner = denoiser.inner_model
    if "forward" in inner.__dict__:
        return
    original = inner.forward
    plan = run.plan
    assert plan is not None

    def forward(self: Any, x: torch.Tensor, sigma: Any, **kwargs: Any) -> torch.Tensor:
        if run.error is not None:
            raise run.error
        cond = kwargs.pop("cond", None)
        handle = run.handle
        assert handle is not None

        def call(xs: torch.Tensor, ss: Any, cs: Any) -> torch.Tensor:
            return original(xs, ss, cond=cs, **kwargs)

        max_rows = int(opt("animatediff_max_rows", 0)) or None
        return plan.denoise(call, x, sigma, cond, step=int(getattr(denoiser, "step", 0)),
                            set_window=handle.set_window, max_rows=max_rows)

    inner.forward = types.MethodType(forward, inner)
    run.wrapped.append(inner)


# ----- outputs -------------------------------------------------------------------------------------
def _encode_options(params: AnimateDiffParams) -> output.EncodeOptions:
    return output.EncodeOptions(
        fps=params.fps, loop=params.loop_number,
        gif_palette=bool(opt("animatediff_gif_palette", False)),
        gif_gifsicle=bool(opt("animatediff_gif_gifsicle", False)),
        mp4_crf=int(opt("animatediff_mp4_crf", 23)),
        mp4_preset=opt("animatediff_mp4_preset", "") or None, mp4_tune=opt("animatediff_mp4_tune", "") or None,
        webm_crf=int(opt("animatediff_webm_crf", 32)),
        webp_quality=int(opt("animatediff_webp_quality", 80)),
        webp_lossless=bool(opt("animatediff_webp_lossless", False)))


def _s3_options() -> output.S3Options | None:
    if not opt("animatediff_s3_enable", False):
        return None
    return output.S3Options(
        endpoint=str(opt("animatediff_s3_endpoint", "")), bucket=str(opt("animatediff_s3_bucket", "")),
        region=opt("animatediff_s3_region", "") or None, prefix=str(opt("animatediff_s3_prefix", "")),
        access_key=opt("animatediff_s3_access_key", "") or None,
        secret_key=opt("animatediff_s3_secret_key", "") or None)


def _video_infotext(text: str, frame_prompt: str, run: Run) -> str:
    """The frame's infotext with the original (multi-line travel) prompt in place of the frame's."""
    if run.original_prompt is not None and text.startswith(frame_prompt):
        return run.original_prompt + text[len(frame_prompt):]
    return text


def _write_videos(p: Any, processed: Any, run: Run) -> None:
    plan, params = run.plan, run.params
    assert plan is not None
    start = processed.index_of_first_image
    frames_all = processed.images[start:]
    formats = [str(f.value) for f in params.formats if f != OutputFormat.FRAME]
    out_dir = Path(p.outpath_samples) / "AnimateDiff" / datetime.date.today().isoformat()
    options, s3 = _encode_options(params), _s3_options()
    new_images: list[Any] = []
    new_infos: list[str] = []
    frame_images: list[Any] = []
    frame_infos: list[str] = []
    uploaded: list[str] = []
    written: list[str] = []
    # ControlNet may append detected maps after the frames: only frames that have a seed are frames
    for video in range(min(len(frames_all), len(processed.all_seeds)) // plan.frames):
        first = video * plan.frames
        frames = list(frames_all[first:first + plan.frames])
        info = _video_infotext(processed.infotexts[start + first], p.all_prompts[first], run)
        if plan.ping_pong:
            frames = output.ping_pong(frames)
        saved = output.save_video(frames, out_dir, seed=int(processed.all_seeds[first]), formats=formats,
                                  infotext=info, options=options, request_id=params.request_id)
        written += [str(path) for path in saved.files.values()]
        videos = [saved.files[f] for f in VIDEO_ORDER if f in saved.files]
        if s3 is not None and videos:
            try:
                uploaded += output.upload_s3(videos, s3)
            except AnimateDiffError as error:
                run.comments.append(f"AnimateDiff: upload failed, files kept locally: {error}")
        shown = 0
        for path in videos:
            if p.is_api:
                new_images.append(base64.b64encode(path.read_bytes()).decode("ascii"))
            elif path.suffix in (".gif", ".webp"):  # the gallery plays these; MP4/WEBM it cannot
                preview = frames[0].copy()
                preview.already_saved_as = str(path)
                new_images.append(preview)
            else:
                continue
            new_infos.append(info)
            shown += 1
        if OutputFormat.FRAME in params.formats or not shown:
            frame_images += frames
            frame_infos += [info] * len(frames)
    processed.images = new_images + frame_images
    processed.infotexts = new_infos + frame_infos
    processed.index_of_first_image = 0
    if run.original_prompt is not None:
        processed.prompt = run.original_prompt
    if uploaded:
        processed.extra_generation_params["AnimateDiff upload"] = uploaded
    processed.extra_generation_params["AnimateDiff files"] = written


# ----- the script ----------------------------------------------------------------------------------
def _short_help(text: str) -> str:
    """The first sentence of a field's help, shown under it (the README has the rest)."""
    first = text.split(". ", 1)[0].rstrip(".")
    return first + "."


def _component(spec: Any, is_img2img: bool, elem_id: Any) -> Any:
    value = spec.to_ui(spec.default)
    common = {"label": spec.label, "elem_id": elem_id(spec.name), "elem_classes": ["animatediff-field"]}
    help_text = spec.help if spec.kind == "choice" and spec.name == "closed_loop" else _short_help(spec.help)
    if spec.api_only or (spec.img2img_only and not is_img2img) or spec.kind == "request_id":
        return gr.State(value=value)
    if spec.kind == "bool":
        return gr.Checkbox(value=value, info=help_text, **common)
    if spec.kind == "model":
        models = list_models()
        return gr.Dropdown(choices=models, value=default_model(models), info=help_text, allow_custom_value=True, scale=3,
                           min_width=280, **common)
    if spec.kind == "formats":
        return gr.CheckboxGroup(choices=[c for c in spec.choices if c != "Frame"], value=value,
                                info="PNG = a folder of frames; TXT = the parameters", **common)
    if spec.kind == "choice":
        return gr.Radio(choices=list(spec.choices), value=value, info=help_text, **common)
    if spec.kind in ("int", "float"):
        bounded = spec.minimum is not None and spec.maximum is not None and spec.maximum - spec.minimum <= 128
        if bounded and spec.step:
            return gr.Slider(minimum=spec.minimum, maximum=spec.maximum, step=spec.step, value=value,
                             info=help_text, **common)
        return gr.Number(value=value, precision=0 if spec.kind == "int" else None, info=help_text, **common)
    if spec.kind == "image":
        return gr.Image(type="pil", image_mode="RGB", **common)
    if spec.name == "video_source":
        return gr.Video(**common)
    return gr.Textbox(value=value, info=help_text, **common)


def _paste_value(params: dict[str, Any], name: str) -> Any:
    """The UI value of field `name` in a parsed infotext (PNG Info paste, or the API's `infotext`)."""
    key = mm_infotext.PASTE_PREFIX + name
    if key in params:
        return params[key]
    if mm_infotext.INFOTEXT_KEY not in params:
        return False if name == "enable" else None  # an image made without AnimateDiff turns it off
    try:
        return mm_infotext.paste_values(params).get(key)
    except Exception:  # a damaged entry must not break pasting the rest
        logger.exception("AnimateDiff: could not read the pasted AnimateDiff parameters")
        return None


def _paste_field(component: Any, name: str) -> Any:
    """A paste binding that works for the UI and for the API's `infotext` (which skips paste callbacks)."""
    try:
        from modules.infotext_utils import PasteField
    except ImportError:  # WebUI < 1.8: on_infotext_pasted expands the keys, a plain key binding reads them
        return (component, mm_infotext.PASTE_PREFIX + name)
    return PasteField(component, lambda params: _paste_value(params, name))


class AnimateDiffScript(scripts.Script):
    """Turns a batch into the frames of a video."""

    def title(self) -> str:
        return "AnimateDiff"

    def show(self, is_img2img: bool) -> Any:
        return scripts.AlwaysVisible

    def ui(self, is_img2img: bool) -> list[Any]:
        components: dict[str, Any] = {}
        with InputAccordion(False, label="AnimateDiff", elem_id=self.elem_id("enable")) as enable:
            components["enable"] = enable
            gr.HTML(f'<div class="animatediff-hint" id="{self.elem_id("hint")}"></div>')
            groups: dict[str, list[Any]] = {}
            for spec in FIELDS[1:]:
                groups.setdefault(spec.group, []).append(spec)
            for group, specs in groups.items():
                visible = [s for s in specs if not (s.api_only or s.kind == "request_id"
                                                    or (s.img2img_only and not is_img2img))]
                hidden = [s for s in specs if s not in visible]
                for spec in hidden:
                    components[spec.name] = _component(spec, is_img2img, self.elem_id)
                if not visible:
                    continue
                if group in GROUP_TITLES:
                    with gr.Accordion(GROUP_TITLES[group], open=False, elem_classes=["animatediff-group"]):
                        for spec in visible:
                            components[spec.name] = _component(spec, is_img2img, self.elem_id)
                else:
                    with gr.Row(elem_classes=["animatediff-row"]):
                        for spec in visible:
                            components[spec.name] = _component(spec, is_img2img, self.elem_id)
                            if spec.kind == "model":
                                refresh = ToolButton("\U0001f504", elem_id=self.elem_id("refresh_models"))
                                refresh.click(fn=lambda: gr.update(choices=list_models()), inputs=[],
                                              outputs=[components[spec.name]])
        ordered = [components[spec.name] for spec in FIELDS]
        pasted = [name for name in mm_infotext.PASTE_FIELDS if not isinstance(components[name], gr.State)]
        self.infotext_fields = [_paste_field(components[name], name) for name in pasted]
        self.paste_field_names = [mm_infotext.PASTE_PREFIX + name for name in pasted]
        return ordered

    def before_process(self, p: Any, *args: Any) -> None:
        if args and args[0] is False:  # the UI/API default: AnimateDiff off, nothing else to read
            return
        run = Run(AnimateDiffParams())
        try:
            params = from_script_args(args)
            for name, value in (getattr(p, XYZ_ATTR, None) or {}).items():
                params = params.replace_field(name, value)
            if not params.enable:
                return
            run.params = params
            _prepare(p, run)
        except Exception as error:
            _fail_later(p, run, error)
            return
        setattr(p, STATE_ATTR, run)
        _wrap_sample(p, run)

    def postprocess(self, p: Any, processed: Any, *args: Any) -> None:
        run: Run | None = getattr(p, STATE_ATTR, None)
        if run is None or run.plan is None or run.error is not None:
            return
        try:
            _write_videos(p, processed, run)
        except Exception as error:  # WebUI swallows it: show it to the user instead
            logger.exception("AnimateDiff: writing the video failed")
            run.comments.append(f"AnimateDiff: writing the video failed: {error}")
        if run.comments:
            processed.extra_generation_params["AnimateDiff notes"] = list(run.comments)


# ----- settings, paste, xyz: registered once at import ---------------------------------------------
def on_ui_settings() -> None:
    section = ("animatediff", "AnimateDiff")
    add = shared.opts.add_option
    info = shared.OptionInfo
    add("animatediff_model_path", info("", "Motion-module folder (empty: the extension's model/ folder)",
                                       section=section))
    add("animatediff_gif_palette", info(False, "GIF: optimise a global palette with ffmpeg", section=section))
    add("animatediff_gif_gifsicle", info(False, "GIF: optimise with gifsicle when installed", section=section))
    add("animatediff_mp4_crf", info(23, "MP4 CRF (0 best - 51 worst)", gr.Slider,
                                    {"minimum": 0, "maximum": 51, "step": 1}, section=section))
    add("animatediff_mp4_preset", info("", "MP4 preset", gr.Dropdown, {"choices": [
        "", "veryslow", "slower", "slow", "medium", "fast", "faster", "veryfast", "superfast", "ultrafast"]},
        section=section))
    add("animatediff_mp4_tune", info("", "MP4 tune", gr.Dropdown,
                                     {"choices": ["", "film", "animation", "grain"]}, section=section))
    add("animatediff_webm_crf", info(32, "WEBM (VP9) CRF (0 best - 63 worst)", gr.Slider,
                                     {"minimum": 0, "maximum": 63, "step": 1}, section=section))
    add("animatediff_webp_quality", info(80, "WEBP quality", gr.Slider, {"minimum": 1, "maximum": 100, "step": 1},
                                         section=section))
    add("animatediff_webp_lossless", info(False, "WEBP lossless", section=section))
    add("animatediff_max_rows", info(0, "Frames per UNet call across windows (0: one window per call)",
                                     gr.Number, {"precision": 0}, section=section))
    add("animatediff_s3_enable", info(False, "Upload videos to S3-compatible storage", section=section))
    add("animatediff_s3_endpoint", info("", "S3 endpoint URL (http:// or https://)", section=section))
    add("animatediff_s3_region", info("", "S3 region", section=section))
    add("animatediff_s3_bucket", info("", "S3 bucket (created if missing)", section=section))
    add("animatediff_s3_prefix", info("animatediff/", "S3 key prefix", section=section))
    add("animatediff_s3_access_key", info("", "S3 access key", section=section))
    add("animatediff_s3_secret_key", info("", "S3 secret key", gr.Textbox, {"type": "password"}, section=section))


def on_infotext_pasted(infotext: str, params: dict[str, Any]) -> None:
    if mm_infotext.INFOTEXT_KEY in params:
        try:
            params.update(mm_infotext.paste_values(params))
        except Exception:  # a damaged entry must not break pasting the rest
            logger.exception("AnimateDiff: could not read the pasted AnimateDiff parameters")


def on_before_ui() -> None:
    """XYZ-plot axes for the main parameters (each sets one field of this p's AnimateDiff params)."""
    xyz = next((d.module for d in scripts.scripts_data if d.script_class.__module__ in ("xyz_grid.py",
                "scripts.xyz_grid")), None)
    if xyz is None or any(getattr(a, "label", "").startswith("[AnimateDiff]") for a in xyz.axis_options):
        return

    def setter(name: str) -> Any:
        def apply(p: Any, value: Any, _: Any) -> None:
            overrides = dict(getattr(p, XYZ_ATTR, None) or {})
            overrides[name] = value
            setattr(p, XYZ_ATTR, overrides)
        return apply

    for spec in FIELDS:
        if not spec.xyz or spec.kind in ("image", "path", "formats"):
            continue
        kind = {"int": int, "float": float}.get(spec.kind, str)
        choices = (lambda c=spec.choices: list(c)) if spec.kind == "choice" else None
        if spec.kind == "bool":
            choices = lambda: ["True", "False"]  # noqa: E731
        if spec.kind == "model":
            choices = list_models
        xyz.axis_options.append(xyz.AxisOption(f"[AnimateDiff] {spec.label}", kind, setter(spec.name),
                                               choices=choices))


script_callbacks.on_cfg_denoiser(on_cfg_denoiser)
script_callbacks.on_ui_settings(on_ui_settings)
script_callbacks.on_infotext_pasted(on_infotext_pasted)
script_callbacks.on_before_ui(on_before_ui)
