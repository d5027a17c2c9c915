"""The adapter's contract with a live A1111 1.10: status codes, no sampling on a client mistake, restore
after every host change (img2img sampler and init latents, FreeInit's rng), failures after sampling
reported in the response."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest

from .client import WebUIClient, WebUIError, ad_payload, png_b64, png_bytes, tiny_txt2img, videos


def plain(api: WebUIClient) -> bytes:
    return png_bytes(api.txt2img(**tiny_txt2img(seed=99)))[0]


@pytest.mark.parametrize(("ad", "field"), [({"video_length": -1}, "video_length"),
                                           ({"closed_loop": "X"}, "closed_loop"),
                                           ({"model": "missing.safetensors"}, "model")])
def test_a_client_mistake_is_http_422_naming_the_field_before_any_sampling(
        api: WebUIClient, ad: dict[str, Any], field: str) -> None:
    start = time.monotonic()
    with pytest.raises(WebUIError) as caught:
        api.post("/sdapi/v1/txt2img", ad_payload(ad, steps=5000))  # minutes of sampling, if it sampled
    body = str(caught.value)
    assert "HTTP 422" in body, body
    detail = json.loads(body.split("HTTP 422: ", 1)[1])["detail"]
    assert f"AnimateDiff parameter '{field}'" in detail, detail
    assert time.monotonic() - start < 60


def _img2img(ad: dict[str, Any], steps: int = 2) -> dict[str, Any]:
    args = {"enable": True, "model": "tiny_v2.safetensors", "format": ["GIF"], "video_length": 6,
            "batch_size": 6, **ad}
    return {"init_images": [png_b64((200, 30, 30))], "denoising_strength": 0.6, "prompt": "a red square",
            "steps": steps, "width": 64, "height": 64, "seed": 3, "sampler_name": "Euler", "cfg_scale": 7,
            "alwayson_scripts": {"AnimateDiff": {"args": [args]}}}


def _interrupted(api: WebUIClient, path: str, payload: dict[str, Any]) -> None:
    worker = threading.Thread(target=lambda: api.post(path, payload), daemon=True)
    worker.start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and api.get("/sdapi/v1/progress?skip_current_image=true")["state"][
            "sampling_step"] < 1:
        time.sleep(0.2)
    api.interrupt()
    worker.join(timeout=600)
    assert not worker.is_alive()


def test_restored_after_img2img_and_freeinit_success_and_interrupt(api: WebUIClient) -> None:
    before = plain(api)
    gif = videos(api.post("/sdapi/v1/img2img", _img2img({"last_frame": png_b64((0, 0, 200))})))[0]
    assert gif[:6] == b"GIF89a"
    assert plain(api) == before  # sampler rebuilt and init latents replaced inside the patch, both undone
    _interrupted(api, "/sdapi/v1/img2img", _img2img({}, steps=400))
    assert plain(api) == before
    free = ad_payload({"video_length": 6, "freeinit_enable": True, "freeinit_iters": 2})
    assert videos(api.post("/sdapi/v1/txt2img", free))[0][:6] == b"GIF89a"
    assert plain(api) == before  # FreeInit's rng stand-in undone
    _interrupted(api, "/sdapi/v1/txt2img", {**free, "steps": 400})
    assert plain(api) == before


def test_an_upload_failure_is_reported_in_the_response_and_nothing_is_lost(api: WebUIClient) -> None:
    keys = {"animatediff_s3_enable": True, "animatediff_s3_endpoint": "http://127.0.0.1:9",
            "animatediff_s3_bucket": "videos", "animatediff_s3_access_key": "k", "animatediff_s3_secret_key": "s"}
    old = {k: api.options().get(k) for k in keys}
    api.post("/sdapi/v1/options", keys)
    try:
        response = api.post("/sdapi/v1/txt2img", ad_payload({"video_length": 4, "format": ["GIF", "TXT"]}))
    finally:
        defaults = {k: "" for k in keys} | {"animatediff_s3_enable": False}
        api.post("/sdapi/v1/options", defaults | {k: v for k, v in old.items() if v is not None})
    assert videos(response)[0][:6] == b"GIF89a"
    info = json.loads(response["info"])
    notes = info["extra_generation_params"]["AnimateDiff notes"]
    assert any("uploading (files kept locally) failed" in n and "127.0.0.1:9" in n for n in notes), notes
    assert len(info["extra_generation_params"]["AnimateDiff files"]) == 2
