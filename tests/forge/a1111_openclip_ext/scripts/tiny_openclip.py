"""Test-only A1111 extension: register the tiny OpenCLIP config of ``tiny-sdxl2816`` with open_clip.

The tiny SDXL checkpoint with SDXL's ADM width (tests/fixtures/webui_checkpoint_xl.py, ``FULL_ADM_SHAPE``) needs
a text tower of width 256 whose projection gives 1280 (SDXL's pooled width); open_clip ships no such config, and
sgm builds the tower from the yaml's ``arch`` by name. At import (A1111 loads scripts before the model) the
fixture's ``animatediff-tiny-openclip-g.json`` is added with open_clip's ``add_model_config``. Real models are
not affected: the name is new.
"""

from pathlib import Path

import open_clip

CONFIG = Path(__file__).resolve().parents[3] / "fixtures" / "animatediff-tiny-openclip-g.json"

if CONFIG.stem not in open_clip.list_models():
    open_clip.add_model_config(CONFIG)
