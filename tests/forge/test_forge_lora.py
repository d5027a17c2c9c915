"""Motion LoRAs on a live Forge, written in the prompt like any LoRA (``<lora:tiny_pan:0.8>``).

Forge's Lora extension keeps no per-network strength, so AnimateDiff reads the UNet strength from the prompt
(``<lora:NAME:S>``, ``<lora:NAME:TE:UNET>``) and merges the file into the motion module for the run; Forge's own
loading finds no UNet layer for the file's keys and changes nothing. The tiny random LoRAs in each real key layout
(tests/fixtures/motion_loras.py ``TEST_LORAS``) are in the launched Forge's models/Lora folder; they fit the tiny V2
module. Skipped unless ANIMATEDIFF_FORGE_DIR is set (see conftest.py).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from tests.fixtures.motion_loras import TEST_LORAS
from tests.webui.client import FRAMES_ONLY, WebUIClient, ad_payload, expect_error, frame_pixels, png_bytes, tiny_txt2img

from .conftest import ForgeSession

PROMPT = "a cat on a wall"


def _frames(api: WebUIClient, prompt: str, **ad: Any) -> np.ndarray:
    payload = ad_payload({"video_length": 4, "batch_size": 4, "format": FRAMES_ONLY, **ad}, prompt=prompt)
    return np.stack(frame_pixels(api.post("/sdapi/v1/txt2img", payload)))


def _still(api: WebUIClient, prompt: str) -> tuple[bytes, str]:
    response = api.txt2img(**tiny_txt2img(seed=5, prompt=prompt))
    return png_bytes(response)[0], json.loads(response["info"])["infotexts"][0]


def _pixels(png: bytes) -> np.ndarray:
    import io

    from PIL import Image
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def test_motion_loras_apply_with_the_prompts_unet_strength(api: WebUIClient, plain_forge: ForgeSession) -> None:
    assert set(TEST_LORAS) <= {item["name"] for item in api.get("/sdapi/v1/loras")}
    reference = png_bytes(plain_forge.client().txt2img(**tiny_txt2img(seed=5, prompt=PROMPT)))[0]
    still, info = _still(api, f"{PROMPT} <lora:tiny_pan:0.8>")  # AnimateDiff off: Forge's loading changes nothing
    assert np.array_equal(_pixels(still), _pixels(reference))
    assert "motion LoRA tiny_pan has no effect without AnimateDiff" in info, info
    plain = _frames(api, PROMPT)
    assert np.array_equal(_frames(api, f"{PROMPT} <lora:tiny_pan:0>"), plain)  # strength 0: bit-identical
    half, full = _frames(api, f"{PROMPT} <lora:tiny_pan:0.5>"), _frames(api, f"{PROMPT} <lora:tiny_pan:1>")
    assert not np.array_equal(half, plain) and not np.array_equal(full, half)
    assert np.array_equal(_frames(api, f"{PROMPT} <lora:tiny_pan:1:0.5>"), half)  # the UNet strength, not the TE's
    assert np.array_equal(_frames(api, f"{PROMPT} <lora:tiny_pan:te=0.3:unet=1>"), full)
    assert np.array_equal(_frames(api, f"{PROMPT} <lora:tiny_pan_resaved:1>"), full)  # safetensors re-save
    zoom = _frames(api, f"{PROMPT} <lora:tiny_zoom:1>")
    stacked = _frames(api, f"{PROMPT} <lora:tiny_pan:1> <lora:tiny_zoom:1>")
    assert not np.array_equal(zoom, plain) and not np.array_equal(stacked, full) and not np.array_equal(stacked, zoom)
    for name in ("tiny_roll", "tiny_tilt"):  # the diffusers and kohya layouts
        assert not np.array_equal(_frames(api, f"{PROMPT} <lora:{name}:1>"), plain), name
    assert np.array_equal(_frames(api, PROMPT), plain)  # undone after every run
    assert _still(api, PROMPT)[0] == reference  # the UNet is as Forge without this extension has it, byte for byte


def test_a_motion_lora_on_a_module_it_does_not_fit_is_422_and_changes_nothing(
        api: WebUIClient, plain_forge: ForgeSession) -> None:
    reference = png_bytes(plain_forge.client().txt2img(**tiny_txt2img(seed=5, prompt=PROMPT)))[0]
    payload = ad_payload({"model": "tiny_v1.safetensors", "video_length": 4, "batch_size": 4},
                         prompt=f"{PROMPT} <lora:tiny_pan:1>")
    body = expect_error(api, payload, "motion LoRA 'tiny_pan' does not fit", "V2")
    assert "HTTP 422" in body, body
    assert _still(api, PROMPT)[0] == reference
