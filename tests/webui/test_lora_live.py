"""Motion LoRAs and the V3 domain adapter through WebUI's Lora extension and prompt syntax, in a live A1111 1.10.

Tiny random LoRA files in each real key layout (tests/fixtures/motion_loras.py) are written into the launched
WebUI's models/Lora folder; nothing is downloaded. The motion LoRAs fit the tiny V2 module (tiny_v2.safetensors).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.fixtures.motion_loras import write_motion_lora, write_v3_adapter

from .client import WebUIClient, ad_payload, expect_error, gif_frames, png_bytes, tiny_txt2img, videos
from .launcher import WebUISession

MOTION_LORAS = {"tiny_pan": ("original", ".ckpt"), "tiny_pan_resaved": ("original", ".safetensors"),
                "tiny_zoom": ("peft", ".safetensors"), "tiny_roll": ("diffusers", ".safetensors"),
                "tiny_tilt": ("kohya", ".safetensors")}
PROMPT = "a cat on a wall"


@pytest.fixture(scope="module")
def loras(webui_session: WebUISession) -> Path:
    if webui_session.data_dir is None:
        pytest.skip("needs a WebUI launched by this session (the LoRA files go into its models/Lora folder)")
    folder = webui_session.data_dir / "models" / "Lora" / "animatediff-tests"
    folder.mkdir(parents=True, exist_ok=True)
    for seed, (name, (layout, suffix)) in enumerate(MOTION_LORAS.items()):
        write_motion_lora(folder / f"{name}{suffix}", layout, seed=seed if name != "tiny_pan_resaved" else 0)
    write_v3_adapter(folder / "tiny_v3_adapter.ckpt")
    WebUIClient(webui_session.url).post("/sdapi/v1/refresh-loras")
    return folder


def _frames(api: WebUIClient, prompt: str, **ad: Any) -> np.ndarray:
    payload = ad_payload({"video_length": 4, "batch_size": 4, **ad}, prompt=prompt)
    return np.stack([np.asarray(f) for f in gif_frames(videos(api.post("/sdapi/v1/txt2img", payload))[0])])


def _still(api: WebUIClient, prompt: str) -> tuple[bytes, dict[str, Any]]:
    response = api.txt2img(**tiny_txt2img(seed=5, prompt=prompt))
    return png_bytes(response)[0], json.loads(response["info"])


def _pixels(png: bytes) -> np.ndarray:
    import io

    from PIL import Image
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def test_motion_loras_are_listed_and_apply_through_the_prompt(api: WebUIClient, loras: Path) -> None:
    listed = {item["name"] for item in api.get("/sdapi/v1/loras")}
    assert set(MOTION_LORAS) | {"tiny_v3_adapter"} <= listed
    still_before, info = _still(api, f"{PROMPT} <lora:tiny_pan:0.8>")  # AnimateDiff off: a note, no effect
    assert "motion LoRA tiny_pan has no effect without AnimateDiff" in info["infotexts"][0]
    assert np.array_equal(_pixels(still_before), _pixels(_still(api, PROMPT)[0]))
    plain = _frames(api, PROMPT)
    assert np.array_equal(_frames(api, f"{PROMPT} <lora:tiny_pan:0>"), plain)  # strength 0: bit-identical
    half, full = _frames(api, f"{PROMPT} <lora:tiny_pan:0.5>"), _frames(api, f"{PROMPT} <lora:tiny_pan:1>")
    assert not np.array_equal(half, plain) and not np.array_equal(full, half)
    assert np.array_equal(_frames(api, f"{PROMPT} <lora:tiny_pan_resaved:1>"), full)  # safetensors re-save
    zoom = _frames(api, f"{PROMPT} <lora:tiny_zoom:1>")
    stacked = _frames(api, f"{PROMPT} <lora:tiny_pan:1> <lora:tiny_zoom:1>")
    assert not np.array_equal(zoom, plain) and not np.array_equal(stacked, full) and not np.array_equal(stacked, zoom)
    for name in ("tiny_roll", "tiny_tilt"):
        assert not np.array_equal(_frames(api, f"{PROMPT} <lora:{name}:1>"), plain), name
    assert np.array_equal(_frames(api, PROMPT), plain)  # undone after every run
    assert _still(api, f"{PROMPT} <lora:tiny_pan:0.8>")[0] == still_before  # plain txt2img: byte-identical


def test_a_motion_lora_on_a_module_it_does_not_fit_is_a_clear_error(api: WebUIClient, loras: Path) -> None:
    before = _still(api, PROMPT)[0]
    payload = ad_payload({"model": "tiny_v1.safetensors", "video_length": 4, "batch_size": 4},
                         prompt=f"{PROMPT} <lora:tiny_pan:1>")
    body = expect_error(api, payload, "motion LoRA 'tiny_pan' does not fit", "V2")
    assert "HTTP 422" in body
    assert _still(api, PROMPT)[0] == before


def test_the_v3_adapter_applies_as_an_ordinary_lora(api: WebUIClient, loras: Path) -> None:
    plain = _pixels(_still(api, PROMPT)[0])
    half = _pixels(_still(api, f"{PROMPT} <lora:tiny_v3_adapter:0.5>")[0])
    full = _pixels(_still(api, f"{PROMPT} <lora:tiny_v3_adapter:1>")[0])
    assert not np.array_equal(half, plain) and not np.array_equal(full, half)
    assert np.array_equal(_pixels(_still(api, PROMPT)[0]), plain)  # WebUI's Lora extension restores the UNet
    video = _frames(api, PROMPT)
    adapted = _frames(api, f"{PROMPT} <lora:tiny_v3_adapter:1>")
    assert not np.array_equal(adapted, video)
    assert np.array_equal(_frames(api, PROMPT), video)
