"""Motion LoRAs on a live Forge, written in the prompt like any LoRA (``<lora:tiny_pan:0.8>``).

Forge's Lora extension keeps no per-network strength, so AnimateDiff reads the UNet strength from the prompt
(``<lora:NAME:S>``, ``<lora:NAME:TE:UNET>``) and merges the file into the motion module for the run; Forge's own
Lora loading gets no tensors of the file (``hosts.forge.lora_reader``), so it changes nothing and never unpickles
it. The V3 domain adapter works as an ordinary LoRA. The tiny random LoRAs in each real key layout
(tests/fixtures/motion_loras.py ``TEST_LORAS``, ``TEST_ADAPTER``) are in the launched Forge's models/Lora folder;
the motion LoRAs fit the tiny V2 module. Skipped unless ANIMATEDIFF_FORGE_DIR is set (see conftest.py).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from tests.fixtures.motion_loras import TEST_ADAPTER, TEST_ADAPTER_KOHYA, TEST_LORAS
from tests.webui.client import FRAMES_ONLY, WebUIClient, ad_payload, expect_error, frame_pixels, png_bytes, tiny_txt2img

from .conftest import ForgeSession
from .launcher import EXTENSION_NAME

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


def _log(session: ForgeSession) -> str:
    return session.log_path.read_text(encoding="utf-8", errors="replace")


def _our_frames(log: str) -> list[str]:
    """Traceback lines in this extension's files (WebUI/Forge log an error a hook raised and go on)."""
    return [line for line in log.splitlines() if line.lstrip().startswith("File ") and f"/{EXTENSION_NAME}/" in line]


def test_motion_loras_apply_with_the_prompts_unet_strength(api: WebUIClient, plain_forge: ForgeSession,
                                                          forge_session: ForgeSession) -> None:
    assert {*TEST_LORAS, TEST_ADAPTER} <= {item["name"] for item in api.get("/sdapi/v1/loras")}
    start = len(_log(forge_session))
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
    log = _log(forge_session)[start:]  # Forge's Lora loading never read the files (nor unpickled tiny_pan.ckpt)
    assert "loading unsafely" not in log and "[LORA]" not in log and not _our_frames(log), log


def test_the_v3_adapter_applies_as_an_ordinary_lora(api: WebUIClient, forge_session: ForgeSession) -> None:
    """Exactly as its tensors in an ordinary kohya LoRA file (``TEST_ADAPTER_KOHYA``), which Forge reads itself."""
    start = len(_log(forge_session))
    plain = _pixels(_still(api, PROMPT)[0])
    half = _pixels(_still(api, f"{PROMPT} <lora:{TEST_ADAPTER}:0.5>")[0])
    full = _pixels(_still(api, f"{PROMPT} <lora:{TEST_ADAPTER}:1>")[0])
    assert not np.array_equal(half, plain) and not np.array_equal(full, half)
    assert np.array_equal(_pixels(_still(api, f"{PROMPT} <lora:{TEST_ADAPTER_KOHYA}:1>")[0]), full)  # its twin
    assert np.array_equal(_pixels(_still(api, PROMPT)[0]), plain)  # Forge's Lora extension restores the UNet
    video = _frames(api, PROMPT)
    assert not np.array_equal(_frames(api, f"{PROMPT} <lora:{TEST_ADAPTER}:1>"), video)
    assert np.array_equal(_frames(api, PROMPT), video)
    log = _log(forge_session)[start:]  # read by AnimateDiff's safe loader, not Forge's: no unpickling, no error
    assert "loading unsafely" not in log and not _our_frames(log), log


def test_a_motion_lora_on_a_module_it_does_not_fit_is_422_and_changes_nothing(
        api: WebUIClient, plain_forge: ForgeSession) -> None:
    reference = png_bytes(plain_forge.client().txt2img(**tiny_txt2img(seed=5, prompt=PROMPT)))[0]
    payload = ad_payload({"model": "tiny_v1.safetensors", "video_length": 4, "batch_size": 4},
                         prompt=f"{PROMPT} <lora:tiny_pan:1>")
    body = expect_error(api, payload, "motion LoRA 'tiny_pan' does not fit", "V2")
    assert "HTTP 422" in body, body
    assert _still(api, PROMPT)[0] == reference
