"""Motion LoRAs in the engine: every real key layout parsed, merged exactly (strength 0 bit-identical, stacking),
undone exactly (success, error, interrupt), refused clearly on a module they do not fit, read safely; the V3
domain adapter recognised and renamed for WebUI's Lora extension."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from motion_module.core.patch import Host, animatediff_patch
from motion_module.core.weights import FP8, weight_storage
from motion_module.errors import IncompatibleModelError, NotAMotionModuleError, UnsafeFileError
from motion_module.files import loading
from motion_module.files import lora as mm_lora
from motion_module.files.lora_keys import classify
from tests.fixtures.motion_loras import (
    build_motion_lora,
    build_v3_adapter,
    expected_deltas,
    write_motion_lora,
    write_v3_adapter,
)
from tests.fixtures.motion_modules import build_state_dict, make_mm, malicious_pickle, write_checkpoint
from tests.fixtures.unets import assert_same_fingerprint, unet_fingerprint, unet_inputs


class Interrupted(BaseException):
    """Stands in for A1111's interrupt."""


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    mm_lora.clear_cache()


def _lora(seed: int = 0, layout: str = "original", **kwargs: object) -> mm_lora.MotionLora:
    return mm_lora.parse_motion_lora(build_motion_lora(layout, seed=seed, **kwargs), f"lora{seed}")  # type: ignore[arg-type]


def _weights(mm: torch.nn.Module) -> dict[str, torch.Tensor]:
    return dict(mm.named_parameters())


FILES = [("original", ".ckpt"), ("original", ".safetensors"), ("diffusers", ".safetensors"),
         ("peft", ".safetensors"), ("compat", ".safetensors"), ("kohya", ".safetensors")]


@pytest.mark.parametrize(("layout", "suffix"), FILES)
def test_every_layout_reads_as_the_same_motion_lora(tmp_path: Path, layout: str, suffix: str) -> None:
    path = write_motion_lora(tmp_path / f"v2_lora_{layout}{suffix}", layout)
    assert mm_lora.lora_kind(path) == "motion"
    lora = mm_lora.load_motion_lora(path, "pan")
    expected = expected_deltas()
    assert set(lora.layers) == set(expected) and len(expected) == 21 * 2 * 4  # V2: 21 modules, 2 attentions, q/k/v/out
    for name, layer in lora.layers.items():
        torch.testing.assert_close(layer.delta(torch.device("cpu")), expected[name])
    assert set(_weights(make_mm("v2"))) >= set(lora.layers)  # every target is a real MotionModule parameter


def test_the_official_wrapped_checkpoint_and_kohya_alpha(tmp_path: Path) -> None:
    wrapped = write_checkpoint(tmp_path / "v2_lora_ZoomIn.ckpt", build_motion_lora("original"), "ckpt", wrap=True)
    assert mm_lora.lora_kind(wrapped) == "motion"
    assert set(mm_lora.load_motion_lora(wrapped, "zoom").layers) == set(expected_deltas())
    half = _lora(layout="kohya", alpha=2.0)  # rank 4, alpha 2: scale 0.5
    name = next(iter(half.layers))
    torch.testing.assert_close(half.layers[name].delta(torch.device("cpu")), expected_deltas(scale=0.5)[name])


def test_the_v3_adapter_is_a_spatial_lora_renamed_for_webui(tmp_path: Path) -> None:
    for suffix in (".ckpt", ".safetensors"):
        path = write_v3_adapter(tmp_path / f"v3_sd15_adapter{suffix}")
        assert mm_lora.lora_kind(path) == "spatial"
        renamed = mm_lora.read_spatial_lora(path)
        assert len(renamed) == len(build_v3_adapter())
        assert "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight" in renamed
        assert "lora_unet_up_blocks_3_attentions_2_transformer_blocks_0_attn2_to_out_0.lora_up.weight" in renamed
        assert "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn2_to_k.lora_up.weight" in renamed
    with pytest.raises(NotAMotionModuleError, match="not inside a motion module"):
        mm_lora.parse_motion_lora(build_v3_adapter(), "adapter")


def test_files_that_are_not_ours_are_left_to_webui(tmp_path: Path) -> None:
    kohya_spatial = {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 32),
                     "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.zeros(32, 4),
                     "lora_te_text_model_encoder_layers_0_mlp_fc1.alpha": torch.tensor(4.0)}
    assert classify(kohya_spatial) is None
    assert classify(build_state_dict("v2")) is None  # a motion module, not a LoRA
    mixed = {**{f"unet.{k}": v for k, v in build_v3_adapter().items()}, "text_encoder.x.lora_A.weight": torch.zeros(1)}
    assert classify(mixed) is None  # a diffusers LoRA with text-encoder parts: not renamed by us
    marker = tmp_path / "ran"
    evil = malicious_pickle(tmp_path / "v2_lora_evil.ckpt", marker)
    assert mm_lora.lora_kind(evil) is None and not marker.exists()
    with pytest.raises(UnsafeFileError):
        mm_lora.load_motion_lora(evil, "evil")
    assert not marker.exists()
    assert mm_lora.lora_kind(tmp_path / "missing.safetensors") is None


def test_motion_loras_for_keeps_motion_loras_with_a_strength(tmp_path: Path) -> None:
    motion = write_motion_lora(tmp_path / "pan.safetensors")
    adapter = write_v3_adapter(tmp_path / "adapter.ckpt")
    found = mm_lora.motion_loras_for([("pan", motion, 0.8), ("adapter", adapter, 1.0), ("off", motion, 0.0)])
    assert [(lora.name, strength) for lora, strength in found] == [("pan", 0.8)]
    assert mm_lora.load_motion_lora(motion, "pan") is found[0][0]  # cached
    assert mm_lora.load_motion_lora(motion, "pan", cached=False) is not found[0][0]


def test_prompt_strengths_read_lora_tags_as_the_lora_extensions_do() -> None:
    """``<lora:NAME>``, ``<lora:NAME:TE>``, ``<lora:NAME:TE:UNET>``, ``te=``/``unet=``: the UNet strength defaults to
    the TE one, that to 1; an entry with a strength that is no number is left out (the extension refuses it)."""
    def params(*items: str) -> SimpleNamespace:
        named = dict(item.split("=", 1) for item in items if "=" in item)
        return SimpleNamespace(positional=[i for i in items if "=" not in i], named=named)

    tags = [params("a"), params("b", "0.7"), params("c", "0.7", "0.2"), params("d", "te=0.3"),
            params("e", "0.9", "unet=0"), params("f", "strong"), params()]
    assert mm_lora.prompt_strengths(tags) == [("a", 1.0), ("b", 0.7), ("c", 0.2), ("d", 0.3), ("e", 0.0)]


def test_merge_is_exact_stacks_and_is_undone_to_the_same_objects() -> None:
    mm = make_mm("v2")
    before = {k: (v, v.detach().clone()) for k, v in _weights(mm).items()}
    a, b = _lora(0), _lora(1)
    with mm_lora.applied_motion_loras(mm, [(a, 0.8), (b, -0.5)]) as changed:
        assert changed == len(a.layers)
        now = _weights(mm)
        for name, (obj, value) in before.items():
            if name in a.layers:
                want = value + expected_deltas(0.8, seed=0)[name] + expected_deltas(-0.5, seed=1)[name]
                torch.testing.assert_close(now[name], want)
                assert now[name] is not obj
            else:
                assert now[name] is obj
    for name, (obj, value) in before.items():
        assert _weights(mm)[name] is obj and torch.equal(obj, value)
    with mm_lora.applied_motion_loras(mm, [(a, 0.0)]) as changed:
        assert changed == 0 and all(_weights(mm)[k] is obj for k, (obj, _) in before.items())


@pytest.mark.parametrize(("family", "base"), [("v1", "sd15"), ("v3", "sd15"), ("sdxl", "sdxl")])
def test_a_module_it_does_not_fit_is_a_clear_error_and_changes_nothing(family: str, base: str) -> None:
    mm = make_mm(family, base)
    before = dict(_weights(mm))
    with pytest.raises(IncompatibleModelError) as caught:
        with mm_lora.applied_motion_loras(mm, [(_lora(0), 1.0)]):
            pass
    message = str(caught.value)
    assert "motion LoRA 'lora0' does not fit" in message and "V2" in message and "mm_sd_v15_v2" in message
    assert caught.value.status_code == 422
    assert all(_weights(mm)[k] is v for k, v in before.items())


def _video(unet: torch.nn.Module, mm: torch.nn.Module, loras: list[tuple[mm_lora.MotionLora, float]]) -> torch.Tensor:
    x, t, ctx = unet_inputs(frames=4)
    with animatediff_patch(Host(unet=unet), mm, 4, motion_loras=loras):  # type: ignore[arg-type]
        return unet(x, t, ctx)


def test_through_the_patch_strength_zero_is_bit_identical_and_strength_changes_the_video(
        unet: torch.nn.Module) -> None:
    mm, a, b = make_mm("v2"), _lora(0), _lora(1)
    plain = _video(unet, mm, [])
    assert torch.equal(_video(unet, mm, [(a, 0.0)]), plain)
    weak, strong = _video(unet, mm, [(a, 0.5)]), _video(unet, mm, [(a, 1.0)])
    assert not torch.equal(weak, plain) and not torch.equal(strong, weak)
    both = _video(unet, mm, [(a, 1.0), (b, 1.0)])
    assert not torch.equal(both, strong)
    torch.testing.assert_close(_video(unet, mm, [(b, 1.0), (a, 1.0)]), both)  # order only rounds differently
    assert torch.equal(_video(unet, mm, []), plain)  # undone exactly after each run


@pytest.mark.parametrize("error", [RuntimeError("boom"), Interrupted()])
def test_undone_after_an_error_and_an_interrupt(unet: torch.nn.Module, error: BaseException) -> None:
    mm = make_mm("v2")
    params, fingerprint = dict(_weights(mm)), unet_fingerprint(unet)
    with pytest.raises(type(error)):
        with animatediff_patch(Host(unet=unet), mm, 4, motion_loras=[(_lora(0), 1.0)]):
            raise error
    assert all(_weights(mm)[k] is v for k, v in params.items())
    assert_same_fingerprint(unet_fingerprint(unet), fingerprint)
    with pytest.raises(IncompatibleModelError):  # a LoRA that does not fit: refused after insertion, all undone
        with animatediff_patch(Host(unet=unet), make_mm("v1"), 4, motion_loras=[(_lora(0), 1.0)]):
            pass
    assert_same_fingerprint(unet_fingerprint(unet), fingerprint)


def test_inspect_says_what_a_lora_is_and_where_it_goes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from motion_module.cli.tools import inspect_file, main_inspect

    motion = write_motion_lora(tmp_path / "v2_lora_PanLeft.ckpt")
    info = inspect_file(motion)
    assert (info["kind"], info["layers"], info["rank"]) == ("motion LoRA", 168, 4)
    assert info["channels"] == [32, 64, 128, 128] and info["mid_block"] is True
    assert "<lora:v2_lora_PanLeft:0.8>" in info["use"] and "V2" in info["use"]
    adapter = write_v3_adapter(tmp_path / "v3_sd15_adapter.ckpt")
    assert main_inspect([str(adapter)]) == 0
    out = capsys.readouterr().out
    assert "spatial LoRA (V3 domain adapter layout)" in out and "<lora:v3_sd15_adapter:0.8>" in out


@pytest.mark.skipif(FP8 is None, reason="this torch has no float8_e4m3fn")
def test_with_fp8_storage_the_merge_is_stored_in_fp8_and_undone(unet: torch.nn.Module, tmp_path: Path) -> None:
    """WebUI's FP8 option on: the merged weights stay float8 (computed in the UNet's dtype per call), strength 0
    is bit-identical, the LoRA changes the video, and the module's own float8 weights come back as they were."""
    path = write_checkpoint(tmp_path / "mm.safetensors", build_state_dict("v2", seed=5, dtype=torch.float16))
    mm = loading.load_motion_module(path, dtype=torch.float32, weights=FP8)
    params = dict(_weights(mm))
    plain = _video(unet, mm, [])
    assert torch.equal(_video(unet, mm, [(_lora(0), 0.0)]), plain)
    merged = _video(unet, mm, [(_lora(0), 1.0)])
    assert torch.isfinite(merged).all() and not torch.equal(merged, plain)
    assert all(_weights(mm)[k] is v for k, v in params.items()) and weight_storage(mm) == FP8
    assert torch.equal(_video(unet, mm, []), plain)
