"""Test-only Forge extension: make Forge recognise the tiny random SD1.5 checkpoint of the test suite.

At import (scripts load before the model) a subclass of huggingface_guess's ``SD15`` that matches the tiny UNet
(32 channels, context 32) goes first in ``model_list.models``; its ``huggingface_repo`` is the absolute path of
the tiny diffusers-style folder named by ``ANIMATEDIFF_FORGE_TINY_REPO`` (tests/fixtures/forge_checkpoint.py).
Real checkpoints never match it (they have 320 channels). Nothing happens when the variable is unset.
"""

import os

from huggingface_guess import model_list

REPO = os.environ.get("ANIMATEDIFF_FORGE_TINY_REPO", "")


class TinySD15(model_list.SD15):
    huggingface_repo = REPO
    unet_config = {
        "context_dim": 32,
        "model_channels": 32,
        "use_linear_in_transformer": False,
        "adm_in_channels": None,
        "use_temporal_attention": False,
    }
    unet_extra_config = {"num_heads": 8, "num_head_channels": -1}


if REPO and not any(getattr(m, "__name__", "") == "TinySD15" for m in model_list.models):
    model_list.models.insert(0, TinySD15)
