"""FP8 weight storage of the motion module (WebUI's *FP8 weight* option), on the real tiny ldm UNet.

The module's Linear weights are stored in float8_e4m3fn and computed in the input's dtype: its parameter
bytes drop to about half of fp16's, the UNet's output stays finite and close to the fp16-stored module's,
the host is restored exactly, and the cache never hands the FP8 module to a run without FP8 (or back).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from motion_module.core.patch import Host, animatediff_patch
from motion_module.core.weights import FP8, CastLinear, fp8_wanted, parameter_bytes, weight_storage
from motion_module.files import loading
from tests.fixtures.motion_modules import SD15_CHANNELS, build_state_dict, write_checkpoint
from tests.fixtures.unets import assert_same_fingerprint, tiny_unet, unet_fingerprint, unet_inputs

pytestmark = pytest.mark.skipif(FP8 is None, reason="this torch has no float8_e4m3fn")


@pytest.fixture(scope="module")
def module_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("fp8") / "mm_v2.safetensors"
    return write_checkpoint(path, build_state_dict("v2", channels=SD15_CHANNELS, seed=5, dtype=torch.float16))


def _state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_fp8_wanted_follows_webui_check_fp8() -> None:
    assert fp8_wanted("Enable", "sd15") and fp8_wanted("Enable", "sdxl")
    assert fp8_wanted("Enable for SDXL", "sdxl") and not fp8_wanted("Enable for SDXL", "sd15")
    assert not fp8_wanted("Disable", "sdxl") and not fp8_wanted(None, "sdxl")
    assert not fp8_wanted("Enable", "sd15", device="mps")  # WebUI never uses FP8 on Apple MPS


def test_fp8_storage_halves_the_parameter_bytes(module_file: Path) -> None:
    sizes = {}
    for label, dtype, weights in (("fp32", torch.float32, None), ("fp16", torch.float16, None),
                                  ("fp8 (rest fp16)", torch.float16, FP8), ("fp8 (rest fp32)", torch.float32, FP8)):
        module = loading.load_motion_module(module_file, dtype=dtype, weights=weights)
        sizes[label] = parameter_bytes(module)
        assert weight_storage(module) == (weights or dtype)
    print("\nmotion-module parameter bytes (tiny V2, channels 32/64/128/128): "
          + ", ".join(f"{k} {v:,}" for k, v in sizes.items()))
    assert sizes["fp16"] * 2 == sizes["fp32"]
    assert sizes["fp8 (rest fp16)"] <= 0.55 * sizes["fp16"]
    assert sizes["fp8 (rest fp32)"] <= 0.6 * sizes["fp16"]


@pytest.mark.parametrize(("family", "base", "channels", "mid", "fp16_mb", "fp8_mb"), [
    ("v2", "sd15", (320, 640, 1280, 1280), True, 908.8, 456.0),
    ("v3", "sd15", (320, 640, 1280, 1280), False, 836.5, 419.8),
    ("sdxl", "sdxl", (320, 640, 1280), False, 475.0, 238.4),
])
def test_fp8_bytes_at_real_sizes(family: str, base: str, channels: tuple[int, ...], mid: bool, fp16_mb: float,
                                 fp8_mb: float) -> None:
    """The real modules' sizes, from their shapes on the meta device (no memory used): Linear weights are
    99.6 % of the parameters, so FP8 storage (rest fp16) is 50.2 % of fp16."""
    from motion_module.core.model import MotionModule
    from motion_module.core.weights import use_cast_linears
    from motion_module.files.spec import MotionModuleSpec

    with torch.device("meta"):
        module = MotionModule(MotionModuleSpec(family, base, channels, 32, mid))
    stored = use_cast_linears(module, FP8)
    shapes = {k: v.numel() for k, v in module.state_dict().items()}
    fp16 = 2 * sum(shapes.values())
    fp8 = sum(n * (1 if k in stored else 2) for k, n in shapes.items())
    print(f"\n{family}: fp32 {2 * fp16 / 1e6:.1f} MB, fp16 {fp16 / 1e6:.1f} MB, fp8 {fp8 / 1e6:.1f} MB")
    assert round(fp16 / 1e6, 1) == fp16_mb and round(fp8 / 1e6, 1) == fp8_mb and fp8 < 0.51 * fp16


def test_fp8_module_keeps_names_and_stores_only_linear_weights_in_fp8(module_file: Path) -> None:
    module = loading.load_motion_module(module_file, dtype=torch.float16, weights=FP8)
    plain = loading.load_motion_module(module_file, dtype=torch.float16)
    assert module.state_dict().keys() == plain.state_dict().keys()
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    assert linears and all(type(m) is CastLinear and m.weight.dtype == FP8 for m in linears)
    assert all(m.bias is None or m.bias.dtype == torch.float16 for m in linears)
    others = [t for n, t in module.state_dict().items() if not any(n == f"{k}.weight" for k, _ in
                                                                    _linear_names(module))]
    assert others and all(t.dtype == torch.float16 for t in others)  # norms, biases, positional tables
    assert not any(p.requires_grad for p in module.parameters()) and not module.training


def _linear_names(module: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in module.named_modules() if isinstance(m, nn.Linear)]


def test_fp8_output_is_finite_and_close_to_fp16_and_the_host_is_restored(unet: nn.Module, module_file: Path) -> None:
    x, t, c = unet_inputs(8)
    loading.clear_cache()
    fp16 = loading.load_for_unet(module_file, "sd15", SD15_CHANNELS, dtype=torch.float32)  # fp16 values, fp32 compute
    fp8 = loading.load_for_unet(module_file, "sd15", SD15_CHANNELS, dtype=torch.float32, weights=FP8)
    assert fp8 is not fp16
    fingerprint, cached_before = unet_fingerprint(unet), _state(fp8)
    with torch.no_grad():
        plain = unet(x, t, c)
        outs = {}
        for label, module in (("fp16", fp16), ("fp8", fp8)):
            with animatediff_patch(Host(unet), module, 8):
                outs[label] = unet(x, t, c)
    assert torch.isfinite(outs["fp8"]).all()
    effect = (outs["fp16"] - plain).abs().mean()
    error = (outs["fp8"] - outs["fp16"]).abs().mean()
    print(f"\nmean |UNet out with module - without| {effect:.4g}; mean |fp8 - fp16| {error:.4g} "
          f"(max {(outs['fp8'] - outs['fp16']).abs().max():.4g})")
    assert effect > 0.01 and error < 0.1 * effect
    assert_same_fingerprint(fingerprint, unet_fingerprint(unet))  # the UNet is as before
    after = _state(fp8)  # the cached module too: nothing was cast or replaced in place
    assert all(after[k].dtype == v.dtype and torch.equal(after[k].float(), v.float()) for k, v in cached_before.items())
    assert loading.load_for_unet(module_file, "sd15", SD15_CHANNELS, dtype=torch.float32, weights=FP8) is fp8


def test_the_cache_never_hands_an_fp8_module_to_a_run_without_fp8(module_file: Path) -> None:
    loading.clear_cache()
    fp8 = loading.load_motion_module_cached(module_file, dtype=torch.float16, weights=FP8)
    plain = loading.load_motion_module_cached(module_file, dtype=torch.float16)
    assert plain is not fp8 and weight_storage(plain) == torch.float16 and weight_storage(fp8) == FP8
    reference = build_state_dict("v2", channels=SD15_CHANNELS, seed=5, dtype=torch.float16)
    assert all(torch.equal(plain.state_dict()[k], v) for k, v in reference.items())  # exact, not via fp8
    assert loading.load_motion_module_cached(module_file, dtype=torch.float16, weights=FP8) is fp8
    assert loading.load_motion_module_cached(module_file, dtype=torch.float16) is plain
    loading.clear_cache()


def test_fp8_linear_casts_to_the_input_dtype() -> None:
    with torch.device("meta"):
        layer = CastLinear(4, 3, bias=False)
    layer.weight = nn.Parameter(torch.randn(3, 4).to(FP8), requires_grad=False)
    x = torch.randn(2, 4)
    assert torch.allclose(layer(x), x @ layer.weight.float().T, atol=1e-6)
    assert layer(x.double()).dtype == torch.float64 and layer(x.bfloat16()).dtype == torch.bfloat16


def test_under_a_webui_fp8_unet_the_module_keeps_its_storage_and_the_unet_compute_dtype(module_file: Path) -> None:
    """WebUI's FP8 UNet (Conv2d/Linear weights in float8, the rest fp32 with --no-half, run under CPU bf16
    autocast as devices.autocast does on the CPU): injection moves the module to the UNet's compute dtype,
    not to the float8 of the UNet's first parameter, and the output is finite."""
    unet = tiny_unet("sd15")
    for layer in unet.modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            layer.to(FP8)
    assert next(unet.parameters()).dtype == FP8  # time_embed.0.weight: what injection used to follow
    module = loading.load_motion_module(module_file, dtype=torch.float32, weights=FP8)
    plain = loading.load_motion_module(module_file, dtype=torch.float32)
    x, t, c = unet_inputs(4)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        for mm in (module, plain):
            with animatediff_patch(Host(unet), mm, 4):
                assert torch.isfinite(unet(x, t, c).float()).all()
    assert weight_storage(module) == FP8 and weight_storage(plain) == torch.float32
    norms = [p for n, p in module.named_parameters() if "norm" in n] + [p for p in plain.parameters()]
    assert norms and all(p.dtype == torch.float32 for p in norms)
