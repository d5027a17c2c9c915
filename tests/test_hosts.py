"""The host layer (motion_module/hosts) on the CPU: Forge's way of running the motion modules (after a block's
layers, no insertion) gives the inserted result, its schedule swap on the predictor is exact and undone, and what
Forge cannot do yet is refused by name. The live Forge tier (tests/forge) runs the same code in Forge itself."""

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


@pytest.mark.parametrize("family", ["v2", "v3"])
def test_after_layers_gives_the_inserted_result(sd15: nn.Module, family: str) -> None:
    """Running each site's module on the output of the layer before it (what Forge's block-inner modifier does)
    is the same computation as inserting it into the block, and leaves the UNet untouched."""
    mm = make_mm(family)
    x, t, ctx = unet_inputs(4)
    with torch.no_grad(), injected(sd15, mm, 4):
        inserted = sd15(x, t, context=ctx)
    before = unet_fingerprint(sd15)
    table = after_layers(plan_sites(sd15, mm), mm, FrameState(4, mm.spec.max_frames))
    blocks = {id(b): b for b in [*sd15.input_blocks, sd15.middle_block, *sd15.output_blocks]}
    undo = [wrap_instance_forward(blocks[key][index], lambda inner, m=module: lambda *a, **k: m(inner(*a, **k)))
            for (key, index), module in table.items()]
    try:
        with torch.no_grad():
            hooked = sd15(x, t, context=ctx)
    finally:
        for step in reversed(undo):
            step()
    assert len(table) == (21 if family == "v2" else 20)
    assert torch.equal(hooked, inserted)
    assert unet_fingerprint(sd15)["tree"] == before["tree"]
    with torch.no_grad():
        assert not torch.equal(sd15(x, t, context=ctx), inserted)  # the modules do change the output


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
    for state, params in [(HostState(forge=True), AnimateDiffParams()),  # what runs on Forge: not refused
                          (HostState(forge=True, img2img=True), AnimateDiffParams()),
                          (HostState(forge=True, hires=True), AnimateDiffParams()),
                          (HostState(forge=True), AnimateDiffParams(video_source="clip.mp4")),  # V2V: ControlNet
                          (HostState(forge=True), AnimateDiffParams(video_path="frames")),
                          (HostState(forge=True), AnimateDiffParams(freenoise=True, freeinit_enable=True))]:
        check_host(state, params)
    with pytest.raises(HostUnsupportedError, match="SDXL"):
        forge.check_module(make_mm("sdxl", "sdxl").spec)
    for family in ("v1", "v2", "v3"):
        forge.check_module(make_mm(family).spec)
    patcher = SimpleNamespace(model=SimpleNamespace(diffusion_model=sd15, predictor=None))
    sd_model = SimpleNamespace(forge_objects=SimpleNamespace(unet=patcher))
    motion_lora = MotionLora("v2_lora_ZoomIn", {})  # refused before its layers are read
    with pytest.raises(HostUnsupportedError, match=f"motion LoRAs \\({motion_lora.name}\\)"):
        with forge.forge_patch(sd_model, make_mm("v2"), 8, None, 1.0, [(motion_lora, 0.8)]):
            pass


def test_missing_patcher_methods_are_named() -> None:
    class OldPatcher:
        def clone(self) -> OldPatcher:
            return self

    with pytest.raises(HostUnsupportedError, match="no add_block_inner_modifier, set_model_unet_function_wrapper"):
        forge.require(OldPatcher())
