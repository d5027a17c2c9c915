"""SparseCtrl's temporal layers (motion_module/control/sparsectrl.py, scripts/animatediff_mm.py): the official key
layout loads strictly, anything else is refused, and the layers group the rows of a UNet call by the running
injection's frames (whole windows, or motion-module windows), only with a V3 module.

(ControlNet 1.1.455's own SparseCtrl class built on these: tests/test_sparsectrl_controlnet.py.)
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from motion_module.__main__ import main
from motion_module.control.sparsectrl import SparseCtrlMotion, SparseCtrlTemporal
from motion_module.core.injection import TemporalWindows, injected
from motion_module.core.model import MotionModule
from motion_module.errors import MotionModuleError, NotAMotionModuleError, ParameterError
from motion_module.files.sparsectrl_file import to_controlnet_layout
from motion_module.files.spec import MotionModuleSpec
from scripts.animatediff_mm import MotionModuleType, MotionWrapper
from tests.fixtures.motion_modules import build_state_dict
from tests.fixtures.sparsectrl import SD15_CHANNELS, motion_tensors, official_controlnet_part
from tests.fixtures.unets import randomize, tiny_unet


def loaded(**kwargs: object) -> SparseCtrlMotion:
    layers = SparseCtrlMotion()
    layers.load_state_dict(motion_tensors(**kwargs))  # type: ignore[arg-type]
    return layers.eval()


def motion_module(family: str) -> MotionModule:
    spec = MotionModuleSpec(family, "sd15", SD15_CHANNELS, 32, family == "v2")
    return randomize(MotionModule(spec), 1).eval()


@pytest.mark.parametrize("pe_length", [None, 32, 24])
def test_official_layout_loads_strictly(pe_length: int | None) -> None:
    tensors = motion_tensors(pe_length=pe_length, dtype=torch.float16)
    layers = SparseCtrlMotion()
    layers.load_state_dict(tensors, strict=True)
    assert len(layers.down_blocks) == 4
    for level, channels in enumerate(SD15_CHANNELS):
        for j in range(2):
            layer = layers.down_blocks[level].motion_modules[j]  # type: ignore[index]
            assert isinstance(layer, SparseCtrlTemporal)
            block = layer.temporal_transformer.transformer_blocks[0]
            assert len(block.attention_blocks) == 1 and len(block.norms) == 1
            assert block.attention_blocks[0].pos_encoder.pe.shape == (1, 32, channels)  # computed, not the file's
    state = layers.state_dict()
    for key, value in tensors.items():
        if not key.endswith(".pe"):
            assert torch.equal(state[key], value.float()), key


def test_other_layouts_are_refused() -> None:
    tensors = motion_tensors()
    missing = dict(tensors)
    del missing["down_blocks.2.motion_modules.1.temporal_transformer.proj_out.bias"]
    with pytest.raises(NotAMotionModuleError, match="missing"):
        SparseCtrlMotion().load_state_dict(missing)
    SparseCtrlMotion().load_state_dict(missing, strict=False)  # not strict: loads what is there
    second = dict(tensors)  # a motion module's second attention
    for name in ("to_q", "to_k", "to_v"):
        second[f"down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.1.{name}"
               ".weight"] = torch.zeros(32, 32)
    with pytest.raises(NotAMotionModuleError, match="unexpected"):
        SparseCtrlMotion().load_state_dict(second)
    with pytest.raises(NotAMotionModuleError, match="not SparseCtrl's temporal layers"):
        SparseCtrlMotion().load_state_dict(build_state_dict("v3"))  # a whole V3 motion module (up blocks)
    three = {k: v for k, v in tensors.items() if not k.startswith("down_blocks.3.")}
    with pytest.raises(NotAMotionModuleError, match="down_blocks 0-3"):
        SparseCtrlMotion().load_state_dict(three)


def test_motion_wrapper_is_controlnets_entry_point() -> None:
    wrapper = MotionWrapper("", "", MotionModuleType.SparseCtrl)
    wrapper.load_state_dict(motion_tensors(), strict=True)
    assert isinstance(wrapper.down_blocks[3].motion_modules[1], SparseCtrlTemporal)  # type: ignore[index]
    with pytest.raises(MotionModuleError, match="SparseCtrl's temporal layers only"):
        MotionWrapper("mm", "hash", MotionModuleType.AnimateDiffV3)


def test_needs_animatediff_with_a_v3_module(unet: torch.nn.Module) -> None:
    layer = loaded().down_blocks[0].motion_modules[0]  # type: ignore[index]
    x = torch.randn(8, 32, 4, 4)
    with pytest.raises(ParameterError, match="enable") as outside:
        layer(x)
    assert outside.value.status_code == 422 and outside.value.field == "enable"
    with injected(unet, motion_module("v2"), 4), pytest.raises(ParameterError) as v2:
        layer(x)
    assert v2.value.field == "model" and "V3" in str(v2.value) and "v2" in str(v2.value)
    with injected(unet, motion_module("v3"), 4):
        assert layer(x).shape == x.shape
    with pytest.raises(ParameterError, match="enable"):  # the injection's frames went with it
        layer(x)


def test_rows_are_grouped_by_the_calls_window(unet: torch.nn.Module) -> None:
    """Two videos of 4 frames in one call: each frame attends over exactly its own video's 4 frames."""
    layer = loaded(seed=2).down_blocks[1].motion_modules[0]  # type: ignore[index]
    x = torch.randn(8, 64, 4, 4, generator=torch.Generator().manual_seed(0))
    with injected(unet, motion_module("v3"), 4) as handle, torch.no_grad():
        out = layer(x)
        torch.testing.assert_close(out, layer(x, 4))
        torch.testing.assert_close(out[:4], layer(x[:4], 4))  # video 0 alone
        assert not torch.allclose(out, layer(x, 8))  # one 8-frame video would mix them
        changed = x.clone()
        changed[1] += 1.0
        moved = layer(changed)
        assert torch.equal(moved[4:], out[4:])  # video 1 never sees video 0's frame
        assert not torch.allclose(moved[[0, 2, 3]], out[[0, 2, 3]])  # the other frames of video 0 do
        handle.window = 2
        torch.testing.assert_close(layer(x), layer(x, 2))


def test_motion_module_windows_are_followed(unet: torch.nn.Module) -> None:
    """Motion-module window mode: one call holds the whole 8-frame video and the layers attend per window."""
    layer = loaded(seed=3).down_blocks[2].motion_modules[1]  # type: ignore[index]
    x = torch.randn(8, 128, 2, 2, generator=torch.Generator().manual_seed(1))
    windows = TemporalWindows(((0, 1, 2, 3), (4, 5, 6, 7)), (torch.ones(4), torch.ones(4)))
    with injected(unet, motion_module("v3"), 8) as handle, torch.no_grad():
        handle.set_temporal_windows(windows)
        out = layer(x)
        handle.set_temporal_windows(None)
        torch.testing.assert_close(out[:4], layer(x[:4], 4))
        torch.testing.assert_close(out[4:], layer(x[4:], 4))
        assert not torch.allclose(out, layer(x, 8))


# ----------------------------------------------------------------------------- official files -> ControlNet's names
def test_official_names_become_controlnets(tmp_path: Path) -> None:
    """Every ControlNet tensor of an official file gets the ldm name and shape of the same layer of an SD1.5-shaped
    encoder (checked against ldm's own UNet, whose input and middle blocks ControlNet's encoder copies)."""
    part, _ = official_controlnet_part(rgb=False)
    converted = to_controlnet_layout({**part, **motion_tensors(pe_length=32)})
    unet = tiny_unet("sd15").state_dict()
    encoder = {k: v.shape for k, v in unet.items() if k.startswith(("input_blocks.", "middle_block.", "time_embed."))}
    assert {k: v.shape for k, v in converted.items() if k in encoder} == encoder
    extra = sorted({k.split(".")[0] for k in converted if k not in encoder})
    assert extra == ["down_blocks", "input_hint_block", "middle_block_out", "zero_convs"]
    widths = [32, 32, 32, 32, 64, 64, 64, 128, 128, 128, 128, 128]  # the tiny UNet's skip connections
    assert [converted[f"zero_convs.{i}.0.weight"].shape[:2] for i in range(12)] == [(w, w) for w in widths]
    assert not any(k.endswith(".pe") for k in converted)  # stored tables dropped
    assert to_controlnet_layout(converted) == converted  # already ControlNet's names: unchanged
    rgb, _ = official_controlnet_part(rgb=True)
    assert to_controlnet_layout({**rgb, **motion_tensors()})["input_hint_block.0.weight"].shape == (32, 5, 3, 3)
    with pytest.raises(NotAMotionModuleError, match="unknown tensors"):
        to_controlnet_layout({**part, **motion_tensors(), "up_blocks.0.resnets.0.conv1.weight": torch.zeros(1)})
    with pytest.raises(NotAMotionModuleError, match="not SparseCtrl's temporal layers"):
        to_controlnet_layout(part)  # an ordinary ControlNet


def test_the_sparsectrl_command_writes_what_controlnet_loads(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    part, _ = official_controlnet_part(rgb=True)
    source = tmp_path / "v3_sd15_sparsectrl_rgb.ckpt"
    torch.save({"controlnet": {**part, **motion_tensors(pe_length=32)}, "global_step": 7}, source)  # wrapped
    target = tmp_path / "sparsectrl_rgb.safetensors"
    assert main(["sparsectrl", str(source), str(target)]) == 0
    assert "SparseCtrl (RGB)" in capsys.readouterr().out
    written = load_file(str(target))
    assert {v.dtype for v in written.values()} == {torch.float16}
    # what ControlNet 1.1.455 looks for (controlnet_model_guess.py): a SparseCtrl, RGB
    guessed = {"down_blocks.0.motion_modules.0.temporal_transformer.norm.weight", "input_hint_block.0.weight"}
    assert guessed <= set(written)
    assert main(["sparsectrl", str(source), str(target)]) == 2  # exists: --force
    assert "already exists" in capsys.readouterr().err
    bad = tmp_path / "mm.safetensors"
    save_file(build_state_dict("v3"), str(bad))
    assert main(["sparsectrl", str(bad), str(tmp_path / "out.safetensors")]) == 2
    assert "mm.safetensors: not SparseCtrl's temporal layers" in capsys.readouterr().err
