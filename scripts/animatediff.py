"""AnimateDiff for AUTOMATIC1111 WebUI 1.9+/1.10: the only Script, a thin host layer over `motion_module`.

One engine call per hook: before_process plans the video input (`controlnet.prepare`) and the request
(`run.prepare_request`); the p.sample wrapper enters `patch.animatediff_patch`, the one owner of every host change
(modules, motion LoRAs, GroupNorm, schedule, sampler, init latents, rng, inner-model wrapper, ControlNet hints), and
re-raises errors hooks swallowed; postprocess calls `publish.publish_videos` (which also interpolates frames)."""

import datetime
import logging
import sys
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr
import torch
from modules import devices, paths, script_callbacks, scripts, sd_samplers, shared
from modules.processing import Processed, StableDiffusionProcessingImg2Img
from modules.ui_components import InputAccordion, ToolButton

from motion_module import controlnet, hosts, lora, nesting, settings, ui_spec
from motion_module import infotext as mm_infotext
from motion_module.freeinit import FreeInitConfig, freeinit_sample
from motion_module.freenoise import noise_source
from motion_module.hosts import a1111, forge
from motion_module.injection import level_channels
from motion_module.model_files import list_motion_modules, model_root
from motion_module.param_fields import FIELDS, XYZ_ATTRIBUTE
from motion_module.params import AnimateDiffParams, from_script_args, selectable_script_runs
from motion_module.patch import Host, HostPatch, animatediff_patch
from motion_module.publish import InterpHost, publish_videos, report, video_job
from motion_module.request_guard import drop_copied_guard, guard
from motion_module.run import RunPlan, check_host, prepare_request

logger = logging.getLogger("animatediff")
EXTENSION_DIR = Path(__file__).resolve().parent.parent
STATE_ATTR = "animatediff_run"


def opt(key: str, default: Any = None) -> Any:  # opts.data: works before the settings page registers ours
    return shared.opts.data.get(key, settings.DEFAULTS.get(key) if default is None else default)


def models_root() -> Path:
    return model_root(settings.model_folder(opt), EXTENSION_DIR / "model")


def list_models() -> list[str]:
    return list_motion_modules(models_root())


@dataclass
class Run:
    """Everything one AnimateDiff request needs, attached to its `p`."""
    params: AnimateDiffParams
    plan: RunPlan | None = None
    module: Any = None
    original_prompt: str | None = None
    error: BaseException | None = None
    patch: HostPatch | None = None
    v2v: controlnet.VideoToVideo = field(default_factory=lambda: controlnet.VideoToVideo({}, 0))
    hints: controlnet.HintSlicer | None = None
    notes: list[str] = field(default_factory=list)


def _prepare(p: Any, run: Run) -> None:
    model = hosts.loaded_model(p)  # Forge loads the checkpoint only after before_process
    check_host(host := hosts.host_state(p, model), run.params)
    video_input = forge.video_input if host.forge else a1111.video_input  # each host's ControlNet units
    run.v2v = video_input(p, run.params, settings.input_roots(opt, Path(paths.data_path)))
    run.params = run.params.replace_field("video_length", run.v2v.frames)
    run.notes += run.v2v.notes
    prompt = p.prompt if isinstance(p.prompt, str) else ""
    ready = prepare_request(  # fp8_storage: a request's override is applied by WebUI only after before_process
        run.params, prompt=prompt, n_iter=p.n_iter, img2img=host.img2img, device=devices.device,
        base="sdxl" if getattr(model, "is_sdxl", False) else "sd15", cached=bool(opt("animatediff_keep_models")),
        channels=level_channels(hosts.host_unet(model, required=True)), model_root=models_root(),
        scheduler=str(getattr(p, "scheduler", "") or ""), steps=int(p.steps or 20), cfg_scale=float(p.cfg_scale),
        dtype=devices.dtype_unet, sampler=str(p.sampler_name or ""),
        fp8_storage=p.override_settings.get("fp8_storage", opt("fp8_storage")))
    if host.forge:
        forge.check_module(ready.module.spec)
    run.module, run.plan, p.batch_size = ready.module, ready.plan, ready.plan.frames
    if ready.prompts is not None:
        run.original_prompt, p.prompt = prompt, ready.prompts
    p.do_not_save_grid = p.do_not_save_samples = True  # frames are saved by us, per video
    p.extra_generation_params[mm_infotext.INFOTEXT_KEY] = ready.infotext
    run.notes += ready.notes  # the engine logged them


# ----- sampling: everything below runs inside the one patch -----------------------------------------
def _guard(p: Any, run: Run) -> None:
    """A refusal fails before other scripts' process(); any error out of sampling runs their postprocess first."""
    def failed(error: BaseException) -> None:
        run.error = run.error or error
        nesting.REQUESTS.end(p)  # over: later requests are not nested in it
        p.scripts.postprocess(p, Processed(p, []))  # the cleanup a finished request gets (ControlNet's restore)

    guard(p, lambda: run.error, lambda call: _sample(p, run, call), failed)


def _sample(p: Any, run: Run, call: Any) -> Any:
    plan = run.plan
    assert plan is not None
    schedule, scale = plan.schedule.alphas_cumprod(), plan.motion_scales()
    loras = lora.active_motion_loras(sys.modules.get("networks"), cached=bool(opt("animatediff_keep_models")))
    owner: AbstractContextManager[HostPatch]
    if forge.is_forge(p.sd_model):  # Forge: the UNet is patched per sampling (process_before_every_sampling)
        owner = forge.forge_patch(p.sd_model, run.module, plan.context, schedule, scale, loras)
    else:
        host = Host(unet=p.sd_model.model.diffusion_model, schedule_owner=p.sd_model)
        owner = animatediff_patch(host, run.module, plan.context, schedule, scale, loras)
    with owner as patch:
        run.patch, run.hints = patch, None
        try:
            if isinstance(p, StableDiffusionProcessingImg2Img):
                # img2img built its sampler in p.init(), with k-diffusion sigmas from the old schedule
                patch.set_attribute(p, "sampler", sd_samplers.create_sampler(p.sampler_name, p.sd_model))
                if len(p.init_images) == 1 and p.init_latent is not None:  # one image for all frames
                    a1111.img2gif(p, run.params, patch, opt)
            if run.params.freenoise:  # the first draw of p.rng is the initial noise (txt2img and img2img)
                patch.set_attribute(p, "rng", noise_source(p.rng, plan.context, plan.overlap, int(p.seeds[0])))
            return _run(run, (lambda: _freeinit(p, run, patch, call)) if run.params.freeinit_enable else call)
        finally:
            run.patch = run.hints = None


def _run(run: Run, call: Any) -> Any:
    """``call()``; an error a hook recorded (WebUI swallows hook errors) is raised in any case, before whatever
    failed after it (a refusal found in a hook, then another script's failure on the unrefused request)."""
    try:
        result = call()
    except Exception as error:
        if run.error is not None and run.error is not error:
            raise run.error from error
        raise
    if run.error is not None:
        raise run.error
    return result


def _freeinit(p: Any, run: Run, patch: HostPatch, call: Any) -> Any:
    assert run.plan is not None
    config = FreeInitConfig.of(run.params, p.seeds[0], run.plan.schedule.alphas_cumprod())

    def one_pass(source: Any) -> Any:
        patch.set_attribute(p, "rng", source)
        return call()

    return freeinit_sample(one_pass, p.rng, config, interrupted=lambda: bool(shared.state.interrupted))


def on_cfg_denoiser(params: Any) -> None:
    """Per sampler call: the windowed inner model (once per inner model), per-frame travel conds."""
    denoiser = params.denoiser
    run: Run | None = getattr(getattr(denoiser, "p", None), STATE_ATTR, None)
    if run is None or run.patch is None or run.plan is None:
        return
    try:
        if isinstance(run.patch, forge.ForgePatch):
            run.patch.step = int(getattr(denoiser, "step", 0))
        else:
            run.patch.wrap_forward(denoiser.inner_model, lambda inner: _windowed(inner, denoiser, run))
        params.text_cond = run.plan.frame_conds(params.text_cond)
    except Exception as error:  # raised from the inner model / p.sample, not swallowed by WebUI
        logger.exception("AnimateDiff")
        run.error = error


def _windowed(inner: Any, denoiser: Any, run: Run) -> Any:
    plan, patch, max_rows = run.plan, run.patch, settings.max_rows(opt)
    assert plan is not None and patch is not None

    def forward(x: torch.Tensor, sigma: Any, **kwargs: Any) -> torch.Tensor:
        if run.error is not None:
            raise run.error
        if run.hints is None:  # ControlNet's hints (built in its process()), per frame on the CPU
            network = getattr(a1111.controlnet_script(denoiser.p), "latest_network", None)
            run.hints = patch.enter(controlnet.HintSlicer(getattr(network, "control_params", None) or [],
                                                          plan.frames, devices.get_device_for("controlnet")))
        cond = kwargs.pop("cond", None)
        try:
            inj = patch.injection
            return plan.denoise(lambda xs, ss, cs: inner(xs, ss, cond=cs, **kwargs), x, sigma, cond,
                                step=int(getattr(denoiser, "step", 0)), set_window=inj.set_window, max_rows=max_rows,
                                on_frames=run.hints.select if run.hints.sliced else None,
                                set_temporal=inj.set_temporal_windows, set_frames=inj.select_frames)
        finally:
            run.hints.restore()

    return forward


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
                                           list_models() if spec.kind == "model" else None)
            made[spec.name] = getattr(gr, name)(**kwargs)
            if spec.kind == "model" and name != "State":
                refresh = ToolButton("\U0001f504", elem_id=self.elem_id("refresh_models"))
                refresh.click(fn=lambda: gr.update(choices=list_models()), inputs=[], outputs=[made[spec.name]])

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
        drop_copied_guard(p)  # a copy of an AnimateDiff request (nested generation) runs as WebUI made it
        if args and args[0] is False:  # the UI/API default: AnimateDiff off, nothing else to read
            return
        run = Run(AnimateDiffParams())
        try:
            run.params = from_script_args(args)
            for name, value in (getattr(p, XYZ_ATTRIBUTE, None) or {}).items():
                run.params = run.params.replace_field(name, value)
            if not run.params.enable or not nesting.REQUESTS.begin(p, shared.state.time_start):  # inner: plain
                return
            _prepare(p, run)
        except Exception as error:  # WebUI swallows hook errors: raised before other scripts' process() instead
            logger.error("AnimateDiff: %s", error)
            run.error = error
            nesting.REQUESTS.end(p)  # refused: never the request others are nested in
        setattr(p, STATE_ATTR, run)
        _guard(p, run)

    def process_before_every_sampling(self, p: Any, *args: Any, **kwargs: Any) -> None:
        """Forge: the motion modules and windows go into this sampling's clone of the UNet patcher."""
        run: Run | None = getattr(p, STATE_ATTR, None)
        if run is not None and isinstance(run.patch, forge.ForgePatch) and run.plan is not None:
            try:
                run.patch.apply(p.sd_model.forge_objects, run.plan, settings.max_rows(opt), lambda: run.error)
            except Exception as error:  # Forge swallows hook errors: raised from p.sample instead
                logger.error("AnimateDiff: %s", error)
                run.error = run.error or error

    def postprocess(self, p: Any, processed: Any, *args: Any) -> None:
        run: Run | None = getattr(p, STATE_ATTR, None)
        if run is None or not nesting.REQUESTS.end(p) or run.plan is None or run.error is not None:
            return  # end(p) False: a copy of the request (ADetailer hands one to every script) or an inner p
        start, out = processed.index_of_first_image, None
        try:
            out_dir = Path(p.outpath_samples) / "AnimateDiff" / datetime.date.today().isoformat()
            job = video_job(run.plan.frames, run.params, out_dir, opt, ping_pong=run.plan.ping_pong,
                            original_prompt=run.original_prompt, source_fps=run.v2v.source_fps, audio=run.v2v.audio,
                            host=InterpHost(devices.device, models_root(), Path(paths.models_path), lambda done, total:
                                            vars(shared.state).update(sampling_step=done, sampling_steps=total)))
            api = bool(getattr(p, "is_api", False)) and not selectable_script_runs(p.script_args)  # X/Y/Z: images
            out = publish_videos(processed.images[start:], processed.infotexts[start:], processed.all_seeds,
                                 p.all_prompts, job, for_api=api)
        except Exception as error:  # the frames stay as they are; the failure is reported
            logger.exception("AnimateDiff: making the videos failed")
            run.notes.append(f"AnimateDiff: making the videos failed: {error}")
        report(processed, out, run.notes, run.original_prompt)


script_callbacks.on_cfg_denoiser(on_cfg_denoiser)
