"""Other extensions' inner generations inside an AnimateDiff request, on a live A1111 1.10: ADetailer runs one
img2img per finished frame from `postprocess_image`, with a copy of the request's script runner and script
arguments (AnimateDiff's still enabled). tests/webui/inner_generation is a test-only extension that does exactly
that and records what each inner generation saw; AnimateDiff must leave those generations alone (one plain
image each: batch size 1, no motion module in the UNet, no video) and still make the video, from the frames
as the inner generations left them."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from .client import WebUIClient, infotexts, png_b64, png_bytes, tiny_txt2img, videos

INNER = "inner generation test"  # the test extension's always-on script (no "animatediff" in it: see test_webui_smoke)
FRAMES = 4


def _payload(route: str, inner: bool, marker: bool = False) -> dict[str, Any]:
    ad = {"enable": True, "model": "tiny_v2.safetensors", "format": ["GIF", "Frame"], "video_length": FRAMES,
          "batch_size": FRAMES}
    scripts: dict[str, Any] = {"AnimateDiff": {"args": [ad]}}
    if inner:
        scripts[INNER] = {"args": [True, marker]}
    if route == "img2img":  # one init image for every frame (img2gif)
        return tiny_txt2img(seed=7, alwayson_scripts=scripts, init_images=[png_b64((200, 30, 30))],
                            denoising_strength=0.6)
    return tiny_txt2img(seed=7, alwayson_scripts=scripts)


def _pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def _plain(api: WebUIClient) -> bytes:
    return png_bytes(api.txt2img(**tiny_txt2img(seed=99)))[0]


def _files(response: dict[str, Any]) -> list[str]:
    return list(json.loads(response["info"])["extra_generation_params"]["AnimateDiff files"])


@pytest.mark.parametrize(("route", "marker"), [("txt2img", False), ("txt2img", True), ("img2img", False)],
                         ids=["txt2img-nested-only", "txt2img-with-adetailer-marker", "img2img-nested-only"])
def test_inner_generations_are_plain_images_and_the_video_keeps_their_results(
        api: WebUIClient, route: str, marker: bool) -> None:
    if INNER not in api.script_names():
        pytest.skip("the test-only extension tests/webui/inner_generation is not loaded (a WebUI given by URL)")
    before = _plain(api)
    api.get("/animatediff-test/inner-runs")  # forget earlier runs
    baseline = api.post(f"/sdapi/v1/{route}", _payload(route, inner=False))
    assert api.get("/animatediff-test/inner-runs") == []  # off unless asked for
    folder = Path(_files(baseline)[0]).parent
    listed = set(folder.iterdir()) if folder.is_dir() else None

    response = api.post(f"/sdapi/v1/{route}", _payload(route, inner=True, marker=marker))
    runs = api.get("/animatediff-test/inner-runs")

    gif, *frames = videos(response)
    assert gif[:6] == b"GIF89a" and Image.open(io.BytesIO(gif)).n_frames == FRAMES
    assert len(frames) == FRAMES
    # one inner generation per frame, each an ordinary single img2img
    assert [run["index"] for run in runs] == list(range(FRAMES)), runs
    for run in runs:
        seen = {k: run.get(k) for k in ("batch_size", "sampling_batch_size", "rows", "motion_modules", "images")}
        assert seen == {"batch_size": 1, "sampling_batch_size": 1, "rows": 2, "motion_modules": 0, "images": 1}
    # the video's frames are the frames as the inner generations left them, not the sampled ones
    for frame, run in zip(frames, runs):
        assert np.array_equal(_pixels(frame), _pixels(base64.b64decode(run["result"])))
    sampled = videos(baseline)[1:]
    assert all(not np.array_equal(_pixels(a), _pixels(b)) for a, b in zip(frames, sampled))
    # the copy of the request handed to AnimateDiff's postprocess before the first inner run publishes nothing
    assert "AnimateDiff files" not in infotexts(response)[0]
    if listed is not None:  # one video written, for the outer request only
        assert set(folder.iterdir()) - listed == {Path(f) for f in _files(response)}
    assert _plain(api) == before
