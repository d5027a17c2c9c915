"""The tiny ControlNet fixture: deterministic, Control-LoRA-marked, outputs fit the tiny UNet.

(ControlNet 1.1.455 loading it and changing the image is covered by tests/webui/test_controlnet_live.py.)
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.fixtures.controlnet_checkpoint import CONFIG_MODEL_CHANNELS, FILENAME, build_tiny_controlnet
from tests.fixtures.unets import tiny_unet


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_controlnet(tmp_path_factory.mktemp("controlnet"), seed=0)


@pytest.fixture(scope="module")
def state(built: Path) -> dict[str, torch.Tensor]:
    return load_file(str(built))


def test_same_seed_same_bytes_other_seed_other_bytes(built: Path, tmp_path: Path) -> None:
    assert built.name == FILENAME
    assert build_tiny_controlnet(tmp_path / "a", seed=0).read_bytes() == built.read_bytes()
    assert build_tiny_controlnet(tmp_path / "b", seed=1).read_bytes() != built.read_bytes()


def test_control_lora_layout(state: dict[str, torch.Tensor]) -> None:
    assert "lora_controlnet" in state  # ControlNet's Control-LoRA route
    assert "input_blocks.11.0.in_layers.0.weight" in state  # present: SD1.5, not SDXL
    assert not any(k.startswith("control_model.") for k in state)
    assert state["input_hint_block.0.weight"].shape[1] == 3
    assert state["time_embed.0.weight"].shape[1] == CONFIG_MODEL_CHANNELS
    for key in ("input_blocks.1.1", "input_blocks.4.1", "input_blocks.7.1", "middle_block.1"):
        width = state[f"{key}.transformer_blocks.0.norm1.weight"].shape[0]
        assert width == {"input_blocks.1.1": 320, "input_blocks.4.1": 640}.get(key, 1280)  # config LayerNorms
    assert {v.dtype for v in state.values()} == {torch.float16}


def test_zero_initialised_layers_are_random(state: dict[str, torch.Tensor]) -> None:
    zero_in_fresh = [k for k in state if k.startswith(("zero_convs.", "middle_block_out.")) or "proj_out" in k
                     or k.startswith("input_hint_block.14.") or "out_layers.3" in k]
    assert len(zero_in_fresh) > 26
    assert all(state[k].abs().max() > 0 for k in zero_in_fresh)


def test_outputs_fit_the_tiny_unet(state: dict[str, torch.Tensor]) -> None:
    """Zero conv i adds to the UNet's i-th skip connection, middle_block_out to its middle output."""
    unet = tiny_unet("sd15", seed=0)
    x, t, ctx = torch.randn(1, 4, 8, 8), torch.tensor([10]), torch.randn(1, 77, 32)
    from ldm.modules.diffusionmodules.util import timestep_embedding

    emb = unet.time_embed(timestep_embedding(t, unet.model_channels))
    h, widths = x, []
    for block in unet.input_blocks:
        h = block(h, emb, ctx)
        widths.append(h.shape[1])
    middle = unet.middle_block(h, emb, ctx).shape[1]
    assert [state[f"zero_convs.{i}.0.weight"].shape[0] for i in range(12)] == widths
    assert state["middle_block_out.0.weight"].shape[0] == middle
