"""ControlNet keyframes (sd-webui-animatediff v2's "keyframe" line) through the API of a live A1111 1.10.1 with the
real sd-webui-controlnet 1.1.455 and the tiny random ControlNet, plus the 422s of keyframes and IP-Adapter.

A unit in batch mode with ``batch_images`` = ``<folder>\\nkeyframe: 5, 1``: the folder's images (natural order)
control frames 5 and 1, every other frame gets ControlNet's empty (zero) control, and the folder of 2 images
does not cap the 8-frame video. Checked bit-exactly against the same unit reading 8 frames whose non-key frames
are black (module "none": a black image is a zero control).

Not live, and why:
* IP-Adapter prompt travel end to end: ControlNet 1.1.455 fails on any IP-Adapter unit in its AnimateDiff batch
  path (``ImageEmbed(c_cond, c.uncond_emb, True)`` on a 2-field NamedTuple: TypeError) before it reads our
  prompt schedule, and its IP-Adapter preprocessors need CLIP-vision weights that are not here. So such a unit
  is a 422 (checked here); the schedule itself (``AnimateDiffArgs.prompt_scheduler``, used exactly as ControlNet
  1.1.455's code uses it) is checked on the CPU (tests/test_cn_keyframes.py).
* SparseCtrl: ControlNet 1.1.455 builds every SparseCtrl model from its fixed SD1.5 config (model_channels
  320, context 768; ``controlnet_model_guess.py``) and loads its ControlNet part with ``strict=True``, so a file
  shaped for the tiny checkpoint (32 channels, context 32) cannot load, and a full-size one cannot run with the
  tiny checkpoint (its 768-wide cross-attention and 320..1280-channel outputs do not fit it); unlike ordinary
  ControlNets there is no Control-LoRA route for it. ControlNet's own SparseCtrl class with our temporal layers
  is run on the CPU instead (tests/test_sparsectrl_controlnet.py).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.fixtures.controlnet_units import api_unit

from .client import WebUIClient, WebUIError, png_bytes, tiny_txt2img
from .launcher import WebUISession

SIZE = 64
FRAMES = 8


def bar(start: int) -> Image.Image:
    """A control image: a white vertical bar 16 pixels wide from column ``start``."""
    pixels = np.zeros((SIZE, SIZE, 3), dtype=np.uint8)
    pixels[:, start:start + 16] = 255
    return Image.fromarray(pixels)


BLACK = Image.new("RGB", (SIZE, SIZE))


def folder(path: Path, images: list[Image.Image]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        image.save(path / f"{i}.png")
    return path


@pytest.fixture
def inputs(webui_session: WebUISession) -> Path:
    if webui_session.data_dir is None:
        pytest.skip("server-side frame folders need a WebUI this session launched (its data folder)")
    path = webui_session.data_dir / "keyframe-inputs"
    path.mkdir(exist_ok=True)
    return path


def unit(model: str, batch_images: str, **extra: Any) -> dict[str, Any]:
    return api_unit(model, extra.pop("module", "none"), input_mode="batch", batch_images=batch_images, **extra)


def request(*units: dict[str, Any], video_length: int = FRAMES) -> dict[str, Any]:
    """Context 4 without overlap and no closed loop: the windows are frames 0-3 and 4-7 at every step."""
    args = {"enable": True, "model": "tiny_v2.safetensors", "format": ["PNG"], "video_length": video_length,
            "batch_size": 4, "overlap": 0, "closed_loop": "N"}
    return tiny_txt2img(seed=21, alwayson_scripts={"AnimateDiff": {"args": [args]},
                                                  "ControlNet": {"args": list(units)}})


def frames(api: WebUIClient, payload: dict[str, Any]) -> list[np.ndarray]:
    return [np.asarray(Image.open(io.BytesIO(png)).convert("RGB")) for png in png_bytes(api.post(
        "/sdapi/v1/txt2img", payload))]


def test_keyframe_images_control_exactly_their_frames(api: WebUIClient, cn_model: str, inputs: Path) -> None:
    plain_before = png_bytes(api.txt2img(**tiny_txt2img(seed=99)))[0]
    keys = folder(inputs / "keys", [bar(40), bar(8)])  # 0.png -> frame 5, 1.png -> frame 1
    keyed = frames(api, request(unit(cn_model, f"{keys}\nkeyframe: 5, 1")))
    every = [BLACK] * FRAMES
    every[5], every[1] = bar(40), bar(8)
    explicit = frames(api, request(unit(cn_model, str(folder(inputs / "explicit", every)))))
    assert len(keyed) == FRAMES  # the 2-image folder does not cap the video
    for k in range(FRAMES):
        np.testing.assert_array_equal(keyed[k], explicit[k], err_msg=f"frame {k}")
    other = folder(inputs / "keys-other", [bar(24), bar(8)])  # only frame 5's image differs
    moved = frames(api, request(unit(cn_model, f"{other}\nkeyframe: 5, 1")))
    for k in range(4):  # window 0-3 never sees frame 5
        np.testing.assert_array_equal(moved[k], keyed[k], err_msg=f"frame {k} saw frame 5's keyframe")
    assert any(not np.array_equal(moved[k], keyed[k]) for k in range(4, FRAMES))
    no_control = frames(api, request(unit(cn_model, str(folder(inputs / "black", [BLACK] * FRAMES)))))
    assert not np.array_equal(keyed[1], no_control[1]) and not np.array_equal(keyed[5], no_control[5])
    assert png_bytes(api.txt2img(**tiny_txt2img(seed=99)))[0] == plain_before  # restored exactly


def _error(api: WebUIClient, payload: dict[str, Any]) -> str:
    with pytest.raises(WebUIError) as caught:
        api.post("/sdapi/v1/txt2img", payload)
    return str(caught.value)


def test_bad_keyframes_and_ip_adapter_units_are_422s(api: WebUIClient, cn_model: str, inputs: Path) -> None:
    keys = folder(inputs / "keys-bad", [bar(0), bar(30)])
    for line, reason in (("keyframe: 0, 8", "keyframe 8 is outside the video (frames 0..7"),
                         ("keyframe: 0, 4, 6", "has 2 images for 3 keyframes"),
                         ("keyframe: 0, x", "is not a list of frame numbers"),
                         ("keyframe: 7, -1", "keyframes 7 and -1 are both frame 7")):
        body = _error(api, request(unit(cn_model, f"{keys}\n{line}")))
        assert "HTTP 422" in body and "AnimateDiff parameter 'batch_images'" in body and reason in body, body
    ip_adapter = unit("ip-adapter_sd15", f"{keys}\nkeyframe: 0, 4", module="ip-adapter_clip_sd15")
    body = _error(api, request(ip_adapter))
    assert "HTTP 422" in body and "ControlNet unit 0 is an IP-Adapter unit" in body, body
