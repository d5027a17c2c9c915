"""The tiny SD1.5 checkpoint for the live-WebUI tier: deterministic, self-consistent, loadable by ldm.

(A1111 itself loading it is covered by tests/webui; this file needs no WebUI and no transformers.)
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
from pathlib import Path
from typing import Any, cast

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file

from tests.fixtures.webui_checkpoint import (
    CLIP_POSITIONS,
    build_tiny_sd15_checkpoint,
    bytes_to_unicode,
    schedule_buffers,
    vae_state_dict,
)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_sd15_checkpoint(tmp_path_factory.mktemp("tiny_sd15"), seed=0)


def _section(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def test_same_seed_same_bytes(built: Path, tmp_path: Path) -> None:
    again = build_tiny_sd15_checkpoint(tmp_path / "again", seed=0)
    assert again.read_bytes() == built.read_bytes()
    assert again.name == "tiny-sd15.safetensors" and again.with_suffix(".yaml").exists()
    a, b = vae_state_dict(0), vae_state_dict(1)
    assert not torch.equal(a["decoder.conv_out.weight"], b["decoder.conv_out.weight"])


def test_yaml_config_matches_the_weights_and_runs(built: Path) -> None:
    from ldm.modules.diffusionmodules.model import Decoder
    from ldm.modules.diffusionmodules.openaimodel import UNetModel

    config = cast(dict[str, Any], OmegaConf.to_container(OmegaConf.load(built.with_suffix(".yaml"))))
    cfg = config["model"]["params"]
    state = load_file(str(built))
    unet = UNetModel(**cfg["unet_config"]["params"]).eval()
    unet.load_state_dict(_section(state, "model.diffusion_model."), strict=True)
    assert len(unet.input_blocks) == 12 and len(unet.output_blocks) == 12
    with contextlib.redirect_stdout(io.StringIO()):
        decoder = Decoder(**cfg["first_stage_config"]["params"]["ddconfig"]).eval()
    decoder.load_state_dict(_section(state, "first_stage_model.decoder."), strict=True)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        latent = torch.randn(1, 4, 8, 8, generator=gen)
        eps = unet(latent, torch.tensor([999.0]), context=torch.randn(1, CLIP_POSITIONS, 32, generator=gen))
        image = decoder(latent)
    assert eps.shape == (1, 4, 8, 8) and torch.isfinite(eps).all()
    assert image.shape == (1, 3, 64, 64) and torch.isfinite(image).all()  # downsample factor 8
    assert 0.05 < float(image.std()) < 3.0, "decoded images should be neither flat nor saturated"
    for name, value in schedule_buffers().items():
        assert torch.equal(state[name], value), name
    assert abs(float(state["alphas_cumprod"][-1]) - 0.0047) < 1e-4  # SD1.5's last alpha-bar


def _bpe(word: str, ranks: dict[tuple[str, str], int]) -> list[str]:
    """CLIP's merge loop: repeatedly merge the best-ranked adjacent pair."""
    parts = list(word[:-1]) + [word[-1] + "</w>"]
    while len(parts) > 1:
        pairs = [(ranks.get(p, 1 << 30), i) for i, p in enumerate(itertools.pairwise(parts))]
        rank, i = min(pairs)
        if rank == 1 << 30:
            break
        parts[i:i + 2] = [parts[i] + parts[i + 1]]
    return parts


def test_tokenizer_files_are_a_valid_clip_bpe(built: Path) -> None:
    folder = built.parent / "tiny-sd15-clip"
    vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
    lines = (folder / "merges.txt").read_text(encoding="utf-8").splitlines()
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    assert lines[0].startswith("#version")
    merges = [(a, b) for a, b in (line.split() for line in lines[1:])]
    assert sorted(vocab.values()) == list(range(len(vocab)))
    assert vocab["<|endoftext|>"] == len(vocab) - 1 == config["eos_token_id"]
    assert vocab["<|startoftext|>"] == len(vocab) - 2 == config["bos_token_id"]
    assert all(a in vocab and b in vocab and a + b in vocab for a, b in merges)
    for token in (",</w>", "(</w>", ")</w>", "[</w>", "]</w>", ":</w>"):  # A1111's comma and emphasis
        assert token in vocab
    state = load_file(str(built))
    prefix = "cond_stage_model.transformer.text_model.embeddings."
    assert state[prefix + "token_embedding.weight"].shape == (len(vocab), config["hidden_size"])
    assert state[prefix + "position_embedding.weight"].shape[0] == config["max_position_embeddings"] == 77
    ranks = {m: i for i, m in enumerate(merges)}
    encode = bytes_to_unicode()
    for word in ("masterpiece", "photo", "zzyzx", "日本", "1.2"):
        text = "".join(encode[b] for b in word.encode("utf-8"))
        assert all(part in vocab for part in _bpe(text, ranks)), word
    assert _bpe("quality", ranks) == ["quality</w>"]  # trained merges compress prompt words
