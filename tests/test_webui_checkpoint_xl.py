"""The tiny SDXL checkpoint for the live-WebUI tier: A1111's SDXL key layout, consistent with its yaml.

(A1111 loading it and making images is covered by tests/webui/test_sdxl_live.py; this file needs no WebUI.)
"""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import OmegaConf

from motion_module.injection import level_channels
from tests.fixtures.motion_modules import SDXL_CHANNELS
from tests.fixtures.webui_checkpoint_xl import ADM_IN, CONTEXT, build_state_dict, model_yaml, unet_state_dict


def test_sdxl_key_layout_and_sizes() -> None:
    state = build_state_dict(vocab_size=600, seed=0)
    # what A1111's guess_model_config_from_state_dict and its clip-included check look for
    assert "conditioner.embedders.1.model.ln_final.weight" in state
    assert "conditioner.embedders.0.transformer.text_model.final_layer_norm.weight" in state
    assert not any(k.startswith(("cond_stage_model.", "conditioner.embedders.1.model.visual")) for k in state)
    assert state["model.diffusion_model.label_emb.0.0.weight"].shape[1] == ADM_IN
    attn = state["model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight"]
    assert attn.shape[1] == CONTEXT
    assert "model.diffusion_model.input_blocks.1.1.norm.weight" not in state  # no attention at level 0
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def test_unet_layout_matches_the_sdxl_motion_modules() -> None:
    from ldm.modules.diffusionmodules.openaimodel import UNetModel

    unet = UNetModel(image_size=8, in_channels=4, out_channels=4, model_channels=32, num_res_blocks=2,
                     attention_resolutions=[4, 2], channel_mult=(1, 2, 4), num_heads=8, use_spatial_transformer=True,
                     transformer_depth=1, context_dim=CONTEXT, legacy=False, use_linear_in_transformer=True)
    missing = set(unet.state_dict()) ^ {k for k in unet_state_dict(0) if not k.startswith("label_emb.")}
    assert not missing
    assert level_channels(unet) == SDXL_CHANNELS


def test_yaml_is_the_resized_sdxl_config(tmp_path: Path) -> None:
    config = OmegaConf.create(model_yaml(tmp_path / "clip"))
    params = config.model.params
    assert config.model.target == "sgm.models.diffusion.DiffusionEngine"
    assert params.network_config.params.adm_in_channels == ADM_IN
    assert params.network_config.params.context_dim == CONTEXT
    embedders = params.conditioner_config.params.emb_models
    assert [e.target.rsplit(".", 1)[1] for e in embedders] == [
        "FrozenCLIPEmbedder", "FrozenOpenCLIPEmbedder2", *["ConcatTimestepEmbedderND"] * 3]
    assert embedders[0].params.version == str(tmp_path / "clip")
