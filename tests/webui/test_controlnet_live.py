"""sd-webui-controlnet 1.1.455 in the live WebUI, driven by the tiny random ControlNet.

The model is tests/fixtures/controlnet_checkpoint.py (a Control-LoRA-layout file; its docstring
says why and where ControlNet looks for models). Skipped when ControlNet is not loaded. In launched
mode the model is built into the WebUI's ``<models>/ControlNet`` (``--models-dir`` if set, else
``<data-dir>/models``); in URL mode it must already be there (``python3 -m
tests.fixtures.controlnet_checkpoint <models>/ControlNet``), same revision (same short hash).

A unit over the API (``alwayson_scripts.ControlNet.args``, one dict per unit)::

    {"enabled": true, "module": "none", "model": "tiny-controlnet-sd15 [<hash>]",
     "image": "<base64 PNG>", "weight": 1.0, "resize_mode": "Just Resize", "processor_res": 64,
     "pixel_perfect": false, "control_mode": "Balanced"}

The full listed name is used: ControlNet caches built models by the requested name, so a stem-only
name could serve a stale model after the file changed.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
from PIL import Image

from .client import WebUIClient, png_bytes, tiny_txt2img

SIZE = 64


def _png_b64(pixels: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _halves(axis: int) -> np.ndarray:
    """A 64x64 RGB control image: white first half along ``axis`` (0: top, 1: left), black rest."""
    img = np.zeros((SIZE, SIZE, 3), dtype=np.uint8)
    if axis == 0:
        img[: SIZE // 2] = 255
    else:
        img[:, : SIZE // 2] = 255
    return img


TOP_WHITE, LEFT_WHITE = _halves(0), _halves(1)


def _unit(model: str, image: np.ndarray, **extra: Any) -> dict[str, Any]:
    unit: dict[str, Any] = {
        "enabled": True, "module": "none", "model": model, "image": _png_b64(image), "weight": 1.0,
        "resize_mode": "Just Resize", "processor_res": SIZE, "pixel_perfect": False,
        "control_mode": "Balanced",
    }
    unit.update(extra)
    return unit


def _generate(client: WebUIClient, *units: dict[str, Any]) -> list[bytes]:
    payload = tiny_txt2img()
    if units:
        payload["alwayson_scripts"] = {"ControlNet": {"args": list(units)}}
    return png_bytes(client.txt2img(**payload))


def _pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def test_unit_changes_the_image_and_appends_the_detected_map(webui: WebUIClient, cn_model: str) -> None:
    plain = _generate(webui)
    controlled = _generate(webui, _unit(cn_model, TOP_WHITE))
    assert len(plain) == 1
    assert len(controlled) == 2, "ControlNet appends its detected map after the generated image"
    assert not np.array_equal(_pixels(controlled[0]), _pixels(plain[0]))
    np.testing.assert_array_equal(_pixels(controlled[1]), TOP_WHITE)  # module "none": the input


def test_save_detected_map_false_appends_nothing(webui: WebUIClient, cn_model: str) -> None:
    assert len(_generate(webui, _unit(cn_model, TOP_WHITE, save_detected_map=False))) == 1


def test_control_image_matters(webui: WebUIClient, cn_model: str) -> None:
    top = _generate(webui, _unit(cn_model, TOP_WHITE))[0]
    left = _generate(webui, _unit(cn_model, LEFT_WHITE))[0]
    assert not np.array_equal(_pixels(top), _pixels(left))


def test_weight_zero_gives_the_plain_image(webui: WebUIClient, cn_model: str) -> None:
    # Pixels, not PNG bytes: the PNG's infotext names the unit ("ControlNet 0: ...") even at weight 0.
    plain = _generate(webui)[0]
    zero = _generate(webui, _unit(cn_model, TOP_WHITE, weight=0.0))[0]
    np.testing.assert_array_equal(_pixels(zero), _pixels(plain))


def test_unet_restored_after_a_controlnet_request(webui: WebUIClient, cn_model: str) -> None:
    before = _generate(webui)[0]
    _generate(webui, _unit(cn_model, TOP_WHITE))
    assert _generate(webui)[0] == before  # byte-identical: same pixels, same infotext
