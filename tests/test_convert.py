"""Layout detection and conversion: original <-> diffusers MotionAdapter, raw HotShot-XL, wrappers, parity."""

from __future__ import annotations

import logging

import pytest
import torch

from motion_module.core.model import MotionModule, sinusoidal_table
from motion_module.errors import NotAMotionModuleError
from motion_module.files.convert import detect_layout, original_to_diffusers, to_original_layout
from motion_module.files.spec import detect_spec
from tests.fixtures.motion_modules import (
    FAMILY_CASES,
    SD15_CHANNELS,
    SDXL_CHANNELS,
    build_case,
    build_state_dict,
    to_diffusers_keys,
    unrelated_state_dict,
)

ORIGINAL_FAMILIES = ["v1", "v2", "v3", "animatelcm", "sdxl", "hotshot", "lightning"]


@pytest.mark.parametrize("case", FAMILY_CASES, ids=lambda c: c.name)
def test_detect_layout(case):
    assert detect_layout(build_case(case).keys()) == case.layout


def test_detect_layout_unknown_and_mixed():
    assert detect_layout(unrelated_state_dict().keys()) == "unknown"
    assert detect_layout(["module." + k for k in build_state_dict("v1")]) == "original"
    mixed = {**build_state_dict("v1"), **build_state_dict("v1", layout="diffusers")}
    with pytest.raises(NotAMotionModuleError, match="mixes"):
        detect_layout(mixed.keys())


@pytest.mark.parametrize("case", FAMILY_CASES, ids=lambda c: c.name)
def test_to_original_layout_matches_independent_original_build(case):
    source = build_case(case, dtype=torch.float16)
    converted = to_original_layout(source)
    expected = build_state_dict(case.family, dtype=torch.float16)
    assert converted.keys() == expected.keys()
    for key, tensor in expected.items():
        assert converted[key].dtype == torch.float16
        assert torch.equal(converted[key], tensor), key
    # no copies: every converted tensor is one of the source's objects
    source_ids = {id(t) for t in source.values()}
    assert all(id(t) in source_ids for t in converted.values())
    if case.layout == "original":
        assert converted is source  # fast path


@pytest.mark.parametrize("family", ORIGINAL_FAMILIES)
def test_original_diffusers_original_round_trip_is_bit_exact(family):
    original = build_state_dict(family, dtype=torch.float16, seed=3)
    diffusers = original_to_diffusers(original)
    assert diffusers.keys() == to_diffusers_keys(original).keys()  # agrees with the fixture's own renaming
    assert all(".temporal_transformer." not in k for k in diffusers)
    back = to_original_layout(diffusers)
    assert back.keys() == original.keys()
    for key, tensor in original.items():
        assert back[key].dtype == tensor.dtype and torch.equal(back[key], tensor), key


@pytest.mark.parametrize(
    ("family", "channels", "mid"), [("v2", SD15_CHANNELS, True), ("sdxl", SDXL_CHANNELS, False)]
)
def test_diffusers_layout_is_the_real_motion_adapter(family, channels, mid):
    from diffusers import MotionAdapter

    adapter = MotionAdapter(block_out_channels=channels, motion_max_seq_length=32, use_motion_mid_block=mid)
    real = {k: tuple(v.shape) for k, v in adapter.state_dict().items()}
    ours = original_to_diffusers(build_state_dict(family))
    assert {k: tuple(v.shape) for k, v in ours.items()} == real
    adapter.load_state_dict(ours, strict=True)


@pytest.mark.parametrize(("seq", "mid", "family"), [(32, True, "v2"), (24, False, "v1")])
def test_loads_a_file_written_by_diffusers_save_pretrained(tmp_path, seq, mid, family):
    from diffusers import MotionAdapter

    from motion_module.files.loading import load_motion_module

    torch.manual_seed(1)
    adapter = MotionAdapter(block_out_channels=(32, 32, 64, 64), motion_max_seq_length=seq, use_motion_mid_block=mid)
    with torch.no_grad():
        for parameter in adapter.parameters():
            parameter.normal_(0.0, 0.05)
    adapter.save_pretrained(tmp_path, safe_serialization=True)
    model = load_motion_module(tmp_path / "diffusion_pytorch_model.safetensors")
    assert (model.spec.family, model.spec.max_frames, model.spec.mid_block) == (family, seq, mid)
    assert model.spec.channels == (32, 32, 64, 64)
    expected = to_original_layout(adapter.state_dict())
    state = model.state_dict()
    assert state.keys() == expected.keys()
    assert all(torch.equal(state[k], v) for k, v in expected.items())


def test_module_parity_with_diffusers_motion_adapter():
    """Our module with converted weights computes what diffusers' AnimateDiffTransformer3D computes.

    Frames of each video are identical, so diffusers' cross-frame GroupNorm equals our per-frame one;
    the positional encoding still makes every frame's output different."""
    from diffusers import MotionAdapter

    torch.manual_seed(0)
    original = build_state_dict("v2", channels=(32, 64, 64, 64), seed=5)
    adapter = MotionAdapter(block_out_channels=(32, 64, 64, 64), motion_max_seq_length=32)
    adapter.load_state_dict(original_to_diffusers(original), strict=True)
    ours = MotionModule(detect_spec(original))
    ours.load_state_dict(original, strict=True)
    frames, videos = 6, 2
    x = torch.randn(videos, 1, 64, 3, 3).expand(videos, frames, 64, 3, 3).reshape(videos * frames, 64, 3, 3)
    with torch.no_grad():
        expected = adapter.up_blocks[0].motion_modules[2](x, num_frames=frames)
        got = ours.up(0, 2)(x, frames)
        mid_expected = adapter.mid_block.motion_modules[0](x, num_frames=frames)
        mid_got = ours.mid()(x, frames)
    assert (got - x).abs().mean() > 0.05  # the module really does something
    assert not torch.allclose(got[0], got[1], atol=1e-3)  # frames differ (positional encoding)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(mid_got, mid_expected, rtol=1e-4, atol=1e-5)


def test_diffusers_file_without_pe():
    diffusers = {k: v for k, v in build_state_dict("v2", layout="diffusers", dtype=torch.float16).items()
                 if not k.endswith("pos_embed.pe")}
    kept_absent = to_original_layout(diffusers)
    assert not any(k.endswith("pos_encoder.pe") for k in kept_absent)
    with_pe = to_original_layout(diffusers, pe_length=32)
    key = "mid_block.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.1.pos_encoder.pe"
    assert with_pe[key].dtype == torch.float16
    assert torch.equal(with_pe[key], sinusoidal_table(32, 128).half())
    assert detect_spec(with_pe).family == "v2" and detect_spec(with_pe).max_frames == 32


def test_full_unet_and_wrapper_prefixes(caplog):
    motion = build_state_dict("v3")
    full = {f"module.{k}": v for k, v in motion.items()}
    full["module.down_blocks.0.resnets.0.conv1.weight"] = torch.zeros(32, 32, 3, 3)
    full["module.conv_in.weight"] = torch.zeros(32, 4, 3, 3)
    with caplog.at_level(logging.INFO, logger="motion_module.files.convert"):
        converted = to_original_layout(full)
    assert converted.keys() == motion.keys()
    assert "ignored 2 tensors" in caplog.text
    prefixed = to_original_layout({f"motion_module.{k}": v for k, v in motion.items()})
    assert prefixed.keys() == motion.keys()


def test_conversion_errors():
    with pytest.raises(NotAMotionModuleError, match="not a motion module"):
        to_original_layout(unrelated_state_dict())
    original = build_state_dict("v3")
    key = "down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.1.pos_encoder.pe"
    original[key] = original[key] + 1
    with pytest.raises(ValueError, match="positional tables"):
        original_to_diffusers(original)
    with pytest.raises(NotAMotionModuleError):
        original_to_diffusers({"conv_in.weight": torch.zeros(1)})
    adapter_keys = build_state_dict("v2", layout="diffusers")
    adapter_keys["down_blocks.0.motion_modules.0.transformer_blocks.0.norm_out.weight"] = torch.zeros(1)
    with pytest.raises(NotAMotionModuleError, match="unexpected tensor"):
        to_original_layout(adapter_keys)
