"""The host layer (animatediff_hosts) on the CPU: Forge's way of running the motion modules (after a block's
layers, no insertion) gives the inserted result, its schedule swap on the predictor is exact and undone, motion
LoRAs merge and are undone, a missing UnetPatcher method is named; the SDXL families plan and patch an SDXL-shaped
UNet. The live Forge tier (tests/forge) runs the same code in Forge itself."""

from __future__ import annotations

import types
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from animatediff_hosts import forge
from motion_module.core.injection import FrameState, InsertedTemporal, after_layers, injected, plan_sites
from motion_module.core.instance_forward import wrap_instance_forward
from motion_module.core.run import HostState, check_host
from motion_module.core.schedules import alphas_cumprod
from motion_module.errors import HostUnsupportedError, IncompatibleModelError
from motion_module.files import lora
from motion_module.files.lora import MotionLora, parse_motion_lora
from motion_module.params.request import AnimateDiffParams
from tests.fixtures.motion_loras import build_motion_lora, expected_deltas, write_motion_lora, write_v3_adapter
from tests.fixtures.motion_modules import make_mm, write_checkpoint
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
    hooked = _hooked(unet, table, (x, t, ctx))
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


def _lora(seed: int) -> MotionLora:
    return parse_motion_lora(build_motion_lora(seed=seed), f"lora{seed}")


def _hooked(unet: nn.Module, table: dict[tuple[int, int], InsertedTemporal],
            inputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """``unet`` run with each table module on the output of its layer (what Forge's block-inner modifier does)."""
    blocks = {id(b): b for b in [*unet.input_blocks, unet.middle_block, *unet.output_blocks]}
    undo = [wrap_instance_forward(blocks[key][index], lambda inner, m=module: lambda *a, **k: m(inner(*a, **k)))
            for (key, index), module in table.items()]
    try:
        with torch.no_grad():
            x, t, ctx = inputs
            return unet(x, t, context=ctx)
    finally:
        for step in reversed(undo):
            step()


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


def test_the_host_checks_are_the_same_on_both_hosts() -> None:
    """Nothing is refused for being on Forge (V2V, FreeNoise, FreeInit, img2img, hires fix run there too)."""
    for state, params in [(HostState(), AnimateDiffParams()), (HostState(img2img=True), AnimateDiffParams()),
                          (HostState(hires=True), AnimateDiffParams()),
                          (HostState(), AnimateDiffParams(video_source="clip.mp4")),
                          (HostState(), AnimateDiffParams(freenoise=True, freeinit_enable=True))]:
        check_host(state, params)


def _forge_model(unet: nn.Module, predictor: nn.Module | None = None) -> SimpleNamespace:
    patcher = SimpleNamespace(model=SimpleNamespace(diffusion_model=unet, predictor=predictor))
    return SimpleNamespace(forge_objects=SimpleNamespace(unet=patcher))


def _forge_video(unet: nn.Module, patch: forge.ForgePatch) -> torch.Tensor:
    """The UNet run the way Forge's block-inner modifier runs it under ``patch`` (its table of motion modules)."""
    patch.injection.set_window(4)
    return _hooked(unet, patch._table, unet_inputs(4))


LORA_CASES = {"plain": [], "zero": [(0, 0.0)], "a": [(0, 0.8)], "ab": [(0, 0.8), (1, -0.5)]}  # (seed, strength)


def test_forge_patch_merges_motion_loras_and_puts_the_same_weights_back(sd15: nn.Module) -> None:
    mm = make_mm("v2")
    before = {name: (param, param.detach().clone()) for name, param in mm.named_parameters()}
    sd_model, videos = _forge_model(sd15, Predictor(alphas_cumprod("scaled_linear"))), {}
    for case, pairs in LORA_CASES.items():
        deltas = [expected_deltas(strength, seed=seed) for seed, strength in pairs]
        with forge.forge_patch(sd_model, mm, 4, None, 1.0, [(_lora(seed), s) for seed, s in pairs]) as patch:
            videos[case] = _forge_video(sd15, patch)
            for name, param in mm.named_parameters():
                want = before[name][1] + sum(d[name] for d in deltas if name in d)
                torch.testing.assert_close(param, want, msg=f"{case}: {name}")
        assert all(param is before[name][0] and torch.equal(param, before[name][1])
                   for name, param in mm.named_parameters()), f"{case}: not put back"
    assert torch.equal(videos["zero"], videos["plain"])  # strength 0: bit-identical
    assert not torch.equal(videos["a"], videos["plain"]) and not torch.equal(videos["ab"], videos["a"])
    predictor = sd_model.forge_objects.unet.model.predictor
    schedule = dict(predictor._buffers)
    with pytest.raises(IncompatibleModelError, match="motion LoRA 'lora0' does not fit"):  # before anything changes
        with forge.forge_patch(sd_model, make_mm("v1"), 4, alphas_cumprod("linear"), 1.0, [(_lora(0), 1.0)]):
            pass
    assert all(predictor._buffers[k] is v for k, v in schedule.items())


def test_motion_loras_come_from_the_prompt_with_forges_files(tmp_path: Path) -> None:
    """Forge's ``networks.loaded_networks`` give the files (its ``unet_multiplier`` stays 1: not read), the parsed
    prompt (``p.extra_network_data``) the UNet strengths; none with extra networks disabled or no Lora extension."""
    pan, zoom = write_motion_lora(tmp_path / "pan.safetensors"), write_motion_lora(tmp_path / "zoom.ckpt", seed=1)
    adapter = write_v3_adapter(tmp_path / "adapter.ckpt")
    loaded = [SimpleNamespace(name=name, network_on_disk=SimpleNamespace(filename=str(path)), unet_multiplier=1.0)
              for name, path in (("pan", pan), ("zoom", zoom), ("adapter", adapter))]
    networks = SimpleNamespace(loaded_networks=loaded)
    data = {"lora": [_params("pan", "0.5"), _params("zoom", "1", "unet=0.25"), _params("adapter", "1"),
                     _params("missing", "1")]}
    p = SimpleNamespace(extra_network_data=data, disable_extra_networks=False)
    assert [(lora.name, s) for lora, s in forge.motion_loras(p, networks)] == [("pan", 0.5), ("zoom", 0.25)]
    assert forge.motion_loras(SimpleNamespace(extra_network_data=data, disable_extra_networks=True), networks) == []
    assert forge.motion_loras(p, None) == []
    assert forge.motion_loras(SimpleNamespace(extra_network_data=None), networks) == []


def test_forges_lora_file_reader_gets_no_motion_lora_tensors_and_the_v3_adapter_read_safely(tmp_path: Path) -> None:
    """``lora_reader`` around Forge's ``networks.load_lora_state_dict``: a motion LoRA (``.ckpt`` too) gives no
    tensors and never reaches Forge's reader (which would unpickle it), the V3 adapter its tensors under WebUI's Lora
    names, any other file Forge's own result; installed on the networks module once and undone exactly."""
    calls: list[str] = []

    def forge_reader(filename: str) -> dict[str, torch.Tensor]:
        calls.append(Path(filename).name)
        return {"lora_unet_x.lora_down.weight": torch.zeros(1)}

    networks = types.ModuleType("networks")
    networks.load_lora_state_dict = forge_reader  # type: ignore[attr-defined]
    undo = lora.wrap_lora_loader(networks, forge.lora_reader, forge.LORA_READER)
    assert undo is not None and networks.load_lora_state_dict is not forge_reader
    for suffix in (".ckpt", ".safetensors"):
        assert networks.load_lora_state_dict(str(write_motion_lora(tmp_path / f"pan{suffix}"))) == {}
    adapter = networks.load_lora_state_dict(str(write_v3_adapter(tmp_path / "adapter.ckpt")))
    assert adapter.keys() == lora.read_spatial_lora(tmp_path / "adapter.ckpt").keys()
    assert all(key.startswith("lora_unet_") for key in adapter) and calls == []
    style = write_checkpoint(tmp_path / "style.safetensors", {"lora_unet_x.lora_down.weight": torch.ones(1)},
                             "safetensors")
    assert list(networks.load_lora_state_dict(str(style))) == ["lora_unet_x.lora_down.weight"]
    assert calls == ["style.safetensors"]
    undo()
    assert networks.load_lora_state_dict is forge_reader


def _params(*items: str) -> SimpleNamespace:
    """WebUI's ``ExtraNetworkParams`` of ``<lora:ITEM:ITEM...>`` (``name=value`` items are named)."""
    named = dict(item.split("=", 1) for item in items if "=" in item)
    return SimpleNamespace(items=list(items), positional=[i for i in items if "=" not in i], named=named)


def test_missing_patcher_methods_are_named() -> None:
    class OldPatcher:
        def clone(self) -> OldPatcher:
            return self

    with pytest.raises(HostUnsupportedError, match="no add_block_inner_modifier, set_model_unet_function_wrapper"):
        forge.require(OldPatcher())
