"""The host layer (motion_module/hosts) on the CPU: Forge's way of running the motion modules (after a block's
layers, no insertion) gives the inserted result, its schedule swap on the predictor is exact and undone, and what
Forge cannot do yet is refused by name; the SDXL families plan and patch an SDXL-shaped UNet. The live Forge tier
(tests/forge) runs the same code in Forge itself."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from motion_module.errors import HostUnsupportedError
from motion_module.hosts import forge
from motion_module.injection import FrameState, after_layers, injected, plan_sites
from motion_module.instance_forward import wrap_instance_forward
from motion_module.lora import MotionLora
from motion_module.params import AnimateDiffParams
from motion_module.run import HostState, check_host
from motion_module.schedules import alphas_cumprod
from tests.fixtures.motion_modules import make_mm
from tests.fixtures.unets import tiny_unet, unet_fingerprint, unet_inputs


@pytest.fixture(scope="module")
def sd15() -> nn.Module:
    return tiny_unet("sd15")


@pytest.fixture(scope="module")
def sdxl() -> nn.Module:
    return tiny_unet("sdxl")


@pytest.mark.parametrize(("family", "base", "sites"), [("v2", "sd15", 21), ("v3", "sd15", 20), ("sdxl", "sdxl", 15)])
def test_after_layers_gives_the_inserted_result(sd15: nn.Module, sdxl: nn.Module, family: str, base: str,
                                                sites: int) -> None:
    """Running each site's module on the output of the layer before it (what Forge's block-inner modifier does)
    is the same computation as inserting it into the block, and leaves the UNet untouched (SD1.5 and SDXL)."""
    mm, unet = make_mm(family, base), sd15 if base == "sd15" else sdxl
    x, t, ctx = unet_inputs(4)
    with torch.no_grad(), injected(unet, mm, 4):
        inserted = unet(x, t, context=ctx)
    before = unet_fingerprint(unet)
    table = after_layers(plan_sites(unet, mm), mm, FrameState(4, mm.spec.max_frames))
    blocks = {id(b): b for b in [*unet.input_blocks, unet.middle_block, *unet.output_blocks]}
    undo = [wrap_instance_forward(blocks[key][index], lambda inner, m=module: lambda *a, **k: m(inner(*a, **k)))
            for (key, index), module in table.items()]
    try:
        with torch.no_grad():
            hooked = unet(x, t, context=ctx)
    finally:
        for step in reversed(undo):
            step()
    assert len(table) == sites
    assert torch.equal(hooked, inserted)
    assert unet_fingerprint(unet)["tree"] == before["tree"]
    with torch.no_grad():
        assert not torch.equal(unet(x, t, context=ctx), inserted)  # the modules do change the output


class Patcher(SimpleNamespace):
    """What ``ForgePatch.apply`` calls of Forge's ``UnetPatcher``, recording what the clone was given."""

    def clone(self) -> Patcher:
        return Patcher(model=self.model, model_options={}, given={})

    def add_block_inner_modifier(self, modifier: object) -> None:
        self.given["block_inner_modifier"] = modifier

    def set_model_unet_function_wrapper(self, wrapper: object) -> None:
        self.given["unet_wrapper"] = wrapper

    def set_group_norm_wrapper(self, wrapper: object) -> None:
        self.given["group_norm_wrapper"] = wrapper

    def add_extra_torch_module_during_sampling(self, module: nn.Module, cast_to_unet_dtype: bool = True) -> None:
        self.given["extra_module"] = module


@pytest.mark.parametrize(("family", "pooled"), [("sdxl", False), ("hotshot", True)])
def test_sdxl_families_patch_forges_sdxl_unet(sdxl: nn.Module, family: str, pooled: bool) -> None:
    """AnimateDiff-SDXL and HotShot-XL on an SDXL-shaped UNet (Forge's has sgm's block layout): the clone gets the
    modifier at every site, the motion module, and for HotShot the GroupNorm pooled over each video's frames."""
    mm = make_mm(family, "sdxl")
    patcher = Patcher(model=SimpleNamespace(diffusion_model=sdxl, predictor=None), model_options={}, given={})
    objects = SimpleNamespace(unet=patcher)
    with forge.forge_patch(SimpleNamespace(forge_objects=objects), mm, 4) as patch:
        clone = patch.apply(objects, SimpleNamespace())  # the request: read only by the wrapper, not called here
        assert objects.unet is clone and clone.given["extra_module"] is mm
        assert len(patch.injection.sites) == 15 and patch.injection.sites[0] == "input_blocks.1"
        assert ("group_norm_wrapper" in clone.given) is pooled
        if pooled:
            norm, x = sdxl.out[0], torch.randn(8, 32, 4, 4)  # two videos of 4 frames
            out = clone.given["group_norm_wrapper"](norm, x, {})
            per_video = torch.cat([torch.nn.functional.group_norm(v.transpose(0, 1)[None], 32, norm.weight,
                                   norm.bias, norm.eps)[0].transpose(0, 1) for v in x.split(4)])
            assert torch.allclose(out, per_video, atol=1e-5) and not torch.allclose(out, norm(x), atol=1e-3)
    assert objects.unet is patcher


class Predictor(nn.Module):
    """A predictor holding the schedule as Forge's ``k_prediction.Prediction`` does: three buffers."""

    def __init__(self, acp: torch.Tensor) -> None:
        super().__init__()
        sigmas = ((1 - acp) / acp) ** 0.5
        self.register_buffer("alphas_cumprod", acp.float())
        self.register_buffer("sigmas", sigmas.float())
        self.register_buffer("log_sigmas", sigmas.log().float())


def test_forge_patch_swaps_the_predictor_schedule_and_puts_the_same_tensors_back(sd15: nn.Module) -> None:
    own = alphas_cumprod("scaled_linear")
    predictor = Predictor(own)
    originals = dict(predictor._buffers)
    patcher = SimpleNamespace(model=SimpleNamespace(diffusion_model=sd15, predictor=predictor))
    sd_model = SimpleNamespace(forge_objects=SimpleNamespace(unet=patcher))
    family = alphas_cumprod("linear")
    with forge.forge_patch(sd_model, make_mm("v2"), 8, family) as patch:
        assert torch.allclose(predictor.alphas_cumprod, family.float())
        assert torch.allclose(predictor.sigmas, ((1 - family) / family).sqrt().float())
        assert torch.allclose(predictor.log_sigmas, predictor.sigmas.log(), atol=1e-5)
        assert predictor.sigmas[-1] > originals["sigmas"][-1] * 1.5  # linear betas end noisier (25 vs 14.6)
        assert set(predictor._buffers) == set(originals)  # still buffers (Forge moves them with the module)
        patch.injection.set_window(4)
    assert all(predictor._buffers[k] is v for k, v in originals.items())
    with pytest.raises(RuntimeError, match="has ended"):
        patch.set_attribute(sd_model, "x", 1)


def test_forge_refuses_by_name(sd15: nn.Module) -> None:
    with pytest.raises(HostUnsupportedError, match="not supported on Forge yet: video input") as caught:
        check_host(HostState(forge=True), AnimateDiffParams(video_source="clip.mp4"))
    assert caught.value.status_code == 422 and "video input" in caught.value.detail
    assert "video input" in str(forge.unsupported(HostState(forge=True), AnimateDiffParams(video_path="frames")))
    for state, params in [(HostState(forge=True), AnimateDiffParams()),  # what runs on Forge: not refused
                          (HostState(forge=True, img2img=True), AnimateDiffParams()),
                          (HostState(forge=True, hires=True), AnimateDiffParams()),
                          (HostState(forge=True), AnimateDiffParams(freenoise=True, freeinit_enable=True))]:
        assert forge.unsupported(state, params) is None
        check_host(state, params)
    check_host(HostState(), AnimateDiffParams(video_source="clip.mp4"))  # A1111: fine
    patcher = SimpleNamespace(model=SimpleNamespace(diffusion_model=sd15, predictor=None))
    sd_model = SimpleNamespace(forge_objects=SimpleNamespace(unet=patcher))
    motion_lora = MotionLora("v2_lora_ZoomIn", {})  # refused before its layers are read
    with pytest.raises(HostUnsupportedError, match=f"motion LoRAs \\({motion_lora.name}\\)"):
        with forge.forge_patch(sd_model, make_mm("v2"), 8, None, 1.0, [(motion_lora, 0.8)]):
            pass


def test_enabled_controlnet_units_are_found() -> None:
    """Forge's ControlNet arguments: its unit objects (``enabled`` attribute) or the API's dicts."""
    assert forge.enabled_units([{"enabled": False}, SimpleNamespace(enabled=True)])
    assert forge.enabled_units([{"enabled": True, "model": "x"}])
    assert not forge.enabled_units([{"enabled": False}, SimpleNamespace(enabled=False), None])
    assert not forge.enabled_units([])


def test_missing_patcher_methods_are_named() -> None:
    class OldPatcher:
        def clone(self) -> OldPatcher:
            return self

    with pytest.raises(HostUnsupportedError, match="no add_block_inner_modifier, set_model_unet_function_wrapper"):
        forge.require(OldPatcher())
