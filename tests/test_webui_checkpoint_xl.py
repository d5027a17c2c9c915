"""The tiny SDXL checkpoint for the live-WebUI tier: A1111's SDXL key layout, consistent with its yaml.

(A1111 loading it and making images is covered by tests/webui/test_sdxl_live.py; this file needs no WebUI.)
"""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import OmegaConf

from motion_module.core.injection import level_channels
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


def test_full_adm_shape_is_sdxls_vector_width(tmp_path: Path) -> None:
    """``tiny-sdxl2816``: pooled 1280 + 6 x 256 = 2816 (what Forge's SDXL conditioner builds), its yaml names the
    tiny OpenCLIP config, and the Forge folder describes the same text tower (Forge builds it from there)."""
    import json

    from tests.fixtures.forge_checkpoint import SDXL_FOLDER, TOKENIZER_FILES, build_forge_repo_xl
    from tests.fixtures.webui_checkpoint_xl import FULL_ADM_SHAPE, OPENCLIP_CONFIG, TEXT_TOWER

    shape = FULL_ADM_SHAPE
    assert shape.adm_in == 2816 and shape.openclip_embed == 1280 and shape.time_embed_dim == 256
    state = build_state_dict(vocab_size=600, seed=0, shape=shape)
    assert state["model.diffusion_model.label_emb.0.0.weight"].shape[1] == 2816
    assert state["conditioner.embedders.1.model.text_projection"].shape == (256, 1280)
    assert not any(".resblocks.2." in k for k in state)  # 2 layers
    config = OmegaConf.create(model_yaml(tmp_path / "clip", shape))
    embedders = config.model.params.conditioner_config.params.emb_models
    assert embedders[1].params.arch == OPENCLIP_CONFIG.stem == "animatediff-tiny-openclip-g"
    assert [e.params.outdim for e in embedders[2:]] == [256] * 3
    assert config.model.params.network_config.params.adm_in_channels == 2816
    text = TEXT_TOWER["text_cfg"]
    assert state["conditioner.embedders.1.model.token_embedding.weight"].shape == (text["vocab_size"], text["width"])
    forge = tmp_path / "forge"
    clip = tmp_path / "tiny-clip"
    for folder in (forge / SDXL_FOLDER / "tokenizer_2", clip):
        folder.mkdir(parents=True)
        for name in TOKENIZER_FILES:
            (folder / name).write_text(f"{folder.name} {name}", encoding="utf-8")
    (clip / "config.json").write_text("{}", encoding="utf-8")
    repo = build_forge_repo_xl(tmp_path / "repo", clip, forge)
    encoder = json.loads((repo / "text_encoder_2" / "config.json").read_text(encoding="utf-8"))
    assert (encoder["hidden_size"], encoder["num_hidden_layers"], encoder["vocab_size"]) == (256, 2, 49408)
    assert json.loads((repo / "vae" / "config.json").read_text(encoding="utf-8"))["scaling_factor"] == 0.13025
    assert (repo / "tokenizer_2" / "vocab.json").read_text(encoding="utf-8") == "tokenizer_2 vocab.json"
    assert set(json.loads((repo / "model_index.json").read_text(encoding="utf-8"))) >= {"text_encoder_2", "tokenizer_2"}
