"""A minimal JSON client for A1111's HTTP API (``/sdapi/v1/*``), standard library only."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import numpy as np
import pytest
from PIL import Image

GENERATION_TIMEOUT_S = 300.0  # one request: a real model on a busy CPU is slow
# AnimateDiff formats that bring every frame back losslessly (API "Frame": PNGs) and write no video (TXT: the
# infotext), so pixels can be compared exactly; GIF bytes also hold the prompt and a palette
FRAMES_ONLY = ["TXT", "Frame"]
# Commas, emphasis brackets and > 75 tokens: A1111's prompt chunking and emphasis run on the tiny tokenizer.
LONG_PROMPT = "a photo of a cat, (masterpiece:1.2), [blurry], ((sharp focus)), " * 8


class WebUIError(RuntimeError):
    """The WebUI answered with an HTTP error; the message carries its JSON body (A1111's ``detail``)."""


class WebUIClient:
    """Calls one WebUI at ``base_url`` (e.g. ``http://127.0.0.1:7861``, no trailing slash needed)."""

    auth: tuple[str, str] | None = None  # HTTP Basic credentials (the tier launches WebUI with --api-auth)

    def __init__(self, base_url: str, auth: tuple[str, str] | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        if auth is not None:
            self.auth = auth
        # every key POSTed to /sdapi/v1/options through this client (tests/webui/options.py puts them back)
        self.options_written: set[str] = set()

    def request(self, method: str, path: str, payload: Any = None,
                timeout: float = GENERATION_TIMEOUT_S) -> Any:
        """``method`` ``path`` with an optional JSON body; returns the decoded JSON answer."""
        data = None if payload is None else json.dumps(payload).encode("utf-8")
        if method == "POST" and path == "/sdapi/v1/options" and isinstance(payload, dict):
            self.options_written.update(payload)
        headers = {"Content-Type": "application/json"}
        if self.auth is not None:
            token = base64.b64encode(":".join(self.auth).encode("utf-8")).decode("ascii")
            headers["Authorization"] = f"Basic {token}"
        req = urllib.request.Request(f"{self.base_url}{path}", data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                body = resp.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")[:4000]
            raise WebUIError(f"{method} {path} -> HTTP {exc.code}: {detail}") from exc
        return json.loads(body) if body else None

    def get(self, path: str, timeout: float = 30.0) -> Any:
        return self.request("GET", path, timeout=timeout)

    def post(self, path: str, payload: Any = None, timeout: float = GENERATION_TIMEOUT_S) -> Any:
        return self.request("POST", path, payload if payload is not None else {}, timeout=timeout)

    def txt2img(self, **payload: Any) -> dict[str, Any]:
        """POST ``/sdapi/v1/txt2img``; the answer has ``images`` (base64 PNGs), ``parameters``, ``info``."""
        return self.post("/sdapi/v1/txt2img", payload)

    def interrupt(self) -> None:
        """Ask the running job to stop (A1111 finishes the current step and returns what it has)."""
        self.post("/sdapi/v1/interrupt", timeout=30.0)

    def options(self) -> dict[str, Any]:
        return self.get("/sdapi/v1/options")

    def script_names(self, tab: str = "txt2img") -> list[str]:
        """Lower-cased titles of the scripts the API accepts for ``tab`` ("txt2img" or "img2img")."""
        return list(self.get("/sdapi/v1/scripts")[tab])


def tiny_txt2img(seed: int = 1234, **extra: Any) -> dict[str, Any]:
    """A txt2img payload for the tiny checkpoint: 64x64, 2 Euler steps, fixed seed; ``extra`` overrides."""
    payload: dict[str, Any] = {
        "prompt": LONG_PROMPT, "negative_prompt": "low quality, watermark", "steps": 2,
        "width": 64, "height": 64, "seed": seed, "sampler_name": "Euler", "scheduler": "Automatic",
        "cfg_scale": 7.0, "batch_size": 1, "n_iter": 1,
    }
    payload.update(extra)
    return payload


def png_bytes(response: dict[str, Any]) -> list[bytes]:
    """The images of a txt2img/img2img answer as raw PNG bytes (A1111 may prefix a data-URL header)."""
    return [base64.b64decode(img.split(",", 1)[1] if img.startswith("data:") else img)
            for img in response["images"]]


def infotexts(response: dict[str, Any]) -> list[str]:
    """The per-image infotexts (``info`` is a JSON string inside the JSON answer)."""
    return list(json.loads(response["info"])["infotexts"])


def videos(response: dict[str, Any]) -> list[bytes]:
    """The ``images`` of an AnimateDiff answer as raw bytes (videos first; see the README's API section)."""
    return [base64.b64decode(item) for item in response["images"]]


def gif_frames(data: bytes) -> list[Image.Image]:
    """Every frame of a GIF (or WEBP), as RGB images."""
    image = Image.open(io.BytesIO(data))
    frames = []
    for index in range(image.n_frames):
        image.seek(index)
        frames.append(image.convert("RGB").copy())
    return frames


def frame_pixels(response: dict[str, Any]) -> list[np.ndarray]:
    """The frames of an answer asked with ``format: FRAMES_ONLY`` (PNG, lossless), as int16 RGB arrays."""
    return [np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16) for data in videos(response)]


def ad_payload(ad: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """A tiny txt2img request with AnimateDiff on (the tiny V2 module, GIF, 8 frames) and ``ad`` over it."""
    args = {"enable": True, "model": "tiny_v2.safetensors", "format": ["GIF"], "video_length": 8,
            "batch_size": 8, **ad}
    return tiny_txt2img(seed=7, alwayson_scripts={"AnimateDiff": {"args": [args]}}, **extra)


def expect_error(api: WebUIClient, payload: dict[str, Any], *needles: str) -> str:
    """POST ``payload`` to txt2img, expect an HTTP 422/500 whose body holds every one of ``needles``."""
    with pytest.raises(WebUIError) as caught:
        api.post("/sdapi/v1/txt2img", payload)
    body = str(caught.value)
    assert "HTTP 500" in body or "HTTP 422" in body, body
    for needle in needles:
        assert needle in body, body
    return body


def png_b64(color: tuple[int, int, int]) -> str:
    """A 64x64 PNG of one colour, base64 (an API image field)."""
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), color).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def interrupted(api: WebUIClient, path: str, payload: dict[str, Any]) -> dict[str, Any]:
    """POST ``payload`` in a thread, press Interrupt once sampling is past its first step, and wait for the request
    to end. Returns ``{"response": ...}`` or ``{"error": ...}`` (an interrupted request may answer either way)."""
    result: dict[str, Any] = {}

    def request() -> None:
        try:
            result["response"] = api.post(path, payload)
        except Exception as error:  # noqa: BLE001 - either answer is an end
            result["error"] = error

    worker = threading.Thread(target=request, daemon=True)
    worker.start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and api.get("/sdapi/v1/progress?skip_current_image=true")["state"][
            "sampling_step"] < 1:
        time.sleep(0.2)
    api.interrupt()
    worker.join(timeout=600)
    assert not worker.is_alive() and result, result
    return result
