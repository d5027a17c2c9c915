"""Test-only Forge extension: make Forge recognise the tiny random checkpoints of the test suite.

At import (scripts load before the model) subclasses of huggingface_guess's ``SD15`` and ``SDXL`` that match the
tiny UNets go first in ``model_list.models``; their ``huggingface_repo`` is the absolute path of the tiny
diffusers-style folder named by ``ANIMATEDIFF_FORGE_TINY_REPO`` (SD1.5: 32 channels, context 32) and
``ANIMATEDIFF_FORGE_TINY_XL_REPO`` (SDXL: 32 channels, context 288, ADM 2816) (tests/fixtures/forge_checkpoint.py).
Being subclasses, Forge builds its own SD1.5 / SDXL engine for them. Real checkpoints never match them (they have
320 channels). Nothing happens for a variable that is unset.
"""

import os

from huggingface_guess import model_list

REPO = os.environ.get("ANIMATEDIFF_FORGE_TINY_REPO", "")
XL_REPO = os.environ.get("ANIMATEDIFF_FORGE_TINY_XL_REPO", "")


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


class TinySDXL(model_list.SDXL):
    huggingface_repo = XL_REPO
    unet_config = {
        "context_dim": 288,
        "model_channels": 32,
        "use_linear_in_transformer": True,
        "transformer_depth": [0, 0, 1, 1, 1, 1],
        "adm_in_channels": 2816,
        "use_temporal_attention": False,
    }
    unet_extra_config = {"num_heads": 8, "num_head_channels": -1}


for repo, guess in ((REPO, TinySD15), (XL_REPO, TinySDXL)):
    if repo and not any(getattr(m, "__name__", "") == guess.__name__ for m in model_list.models):
        model_list.models.insert(0, guess)
