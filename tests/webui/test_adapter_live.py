"""The adapter's contract with a live A1111 1.10: status codes, no sampling on a client mistake, restore
after every host change (img2img sampler and init latents, FreeInit's rng), failures after sampling
reported in the response."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from PIL import Image

from .client import (
    WebUIClient,
    WebUIError,
    ad_payload,
    gif_frames,
    interrupted,
    png_b64,
    png_bytes,
    tiny_txt2img,
    videos,
)
from .launcher import WebUISession


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


def test_restored_after_img2img_and_freeinit_success_and_interrupt(api: WebUIClient) -> None:
    before = plain(api)
    gif = videos(api.post("/sdapi/v1/img2img", _img2img({"last_frame": png_b64((0, 0, 200))})))[0]
    assert gif[:6] == b"GIF89a"
    assert plain(api) == before  # sampler rebuilt and init latents replaced inside the patch, both undone
    interrupted(api, "/sdapi/v1/img2img", _img2img({}, steps=400))
    assert plain(api) == before
    free = ad_payload({"video_length": 6, "freeinit_enable": True, "freeinit_iters": 2})
    assert videos(api.post("/sdapi/v1/txt2img", free))[0][:6] == b"GIF89a"
    assert plain(api) == before  # FreeInit's rng stand-in undone
    interrupted(api, "/sdapi/v1/txt2img", {**free, "steps": 400})
    assert plain(api) == before


def test_an_upload_failure_is_reported_in_the_response_and_nothing_is_lost(api: WebUIClient,
                                                                          webui_session: WebUISession) -> None:
    """boto3 is optional (install.py leaves it out, so the kit's WebUI has none): without it the upload fails
    with the install hint, with it on a closed port; either way the response says so and keeps every file."""
    boto3 = webui_session.has_package("boto3")
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
    because = {True: "127.0.0.1:9", False: "needs the boto3 package"}
    reasons = [because[boto3]] if boto3 is not None else list(because.values())  # None: a WebUI at a URL
    assert any("uploading (files kept locally) failed" in n and any(r in n for r in reasons) for n in notes), notes
    assert len(info["extra_generation_params"]["AnimateDiff files"]) == 2


# ----- refusals, errors inside sampling and interrupts leave WebUI and ControlNet as they were -----------------
# Each refusal is found before sampling; a ControlNet unit with its own image (ControlNet binds the tiny
# Control-LoRA into the UNet in its process()) or one that reads the video must not stay bound afterwards.
REFUSALS = {"context": ({"batch_size": 64}, "context"),  # TooManyFramesError: V2 holds 32 positions
            "format": ({"format": ["NOPE"]}, "formats"),
            "video_path": ({"video_path": "/etc"}, "video_path")}  # outside the folders AnimateDiff may read
UNITS = ("no-unit", "own-image", "reads-video")
SAMPLING_ERROR_SEED = 424242  # MARKER_SEED of tests/webui/sampling_error_ext: its requests fail inside sampling


@pytest.fixture(scope="module")
def baseline(webui_session: WebUISession) -> bytes:
    """The plain txt2img before any refusal of this module: every test compares with it, so a change that one
    refusal left behind fails that test and every later one."""
    return plain(WebUIClient(webui_session.url))


@pytest.fixture(scope="module")
def frames_dir(webui_session: WebUISession) -> str:
    if webui_session.data_dir is None:
        pytest.skip("a frames folder the server may read needs a WebUI this session launched (its data folder)")
    folder = webui_session.data_dir / "refusal-frames"
    folder.mkdir(exist_ok=True)
    for i in range(8):
        Image.new("RGB", (64, 64), (30 * i, 255 - 30 * i, 128)).save(folder / f"{i}.png")
    return str(folder)


def _with_unit(payload: dict[str, Any], kind: str, cn_model: str, frames: str) -> dict[str, Any]:
    """``payload`` with ControlNet unit ``kind`` (UNITS); a unit that reads the video gets AnimateDiff's
    ``video_path`` (unless the request already names one)."""
    if kind == "no-unit":
        return payload
    unit = {"enabled": True, "module": "none", "model": cn_model, "weight": 1.0, "resize_mode": "Just Resize",
            "processor_res": 64, "pixel_perfect": False, "control_mode": "Balanced"}
    if kind == "own-image":
        unit["image"] = png_b64((255, 255, 255))
    else:
        args = payload["alwayson_scripts"]["AnimateDiff"]["args"][0]
        args.setdefault("video_path", frames)
    return {**payload, "alwayson_scripts": {**payload["alwayson_scripts"], "ControlNet": {"args": [unit]}}}


@pytest.mark.parametrize("unit", UNITS)
@pytest.mark.parametrize("refusal", REFUSALS)
def test_a_refusal_is_422_naming_the_field_and_leaves_a_plain_txt2img_byte_identical(
        api: WebUIClient, cn_model: str, frames_dir: str, baseline: bytes, refusal: str, unit: str) -> None:
    before = plain(api)
    assert before == baseline
    ad, field = REFUSALS[refusal]
    payload = _with_unit(ad_payload(dict(ad)), unit, cn_model, frames_dir)
    with pytest.raises(WebUIError) as caught:
        api.post("/sdapi/v1/txt2img", payload)
    body = str(caught.value)
    assert "HTTP 422" in body, body
    assert f"AnimateDiff parameter '{field}'" in json.loads(body.split("HTTP 422: ", 1)[1])["detail"], body
    assert plain(api) == before


def test_an_error_inside_sampling_with_a_controlnet_unit_leaves_a_plain_txt2img_byte_identical(
        api: WebUIClient, cn_model: str, frames_dir: str, baseline: bytes) -> None:
    before = baseline
    # A plain batch with the failed request's prompts, steps and size: A1111 reuses its cached conds, which
    # ControlNet's p.sample wrapper marks in place (an extra mark-token row) when the request starts sampling.
    same_conds = tiny_txt2img(seed=99, batch_size=8)
    batch_before = png_bytes(api.txt2img(**same_conds))
    for unit in UNITS[1:]:
        payload = _with_unit({**ad_payload({}), "seed": SAMPLING_ERROR_SEED}, unit, cn_model, frames_dir)
        with pytest.raises(WebUIError) as caught:
            api.post("/sdapi/v1/txt2img", payload)
        assert "HTTP 500" in str(caught.value) and "simulated out of memory" in str(caught.value), caught.value
        assert png_bytes(api.txt2img(**same_conds)) == batch_before, unit
        assert plain(api) == before, unit
    ok = _with_unit(ad_payload({}), "own-image", cn_model, frames_dir)  # and the next real run is unaffected
    assert gif_frames(videos(api.post("/sdapi/v1/txt2img", ok))[0]).__len__() == 8
    assert plain(api) == before


def test_an_interrupt_with_a_controlnet_unit_leaves_a_plain_txt2img_byte_identical(
        api: WebUIClient, cn_model: str, frames_dir: str, baseline: bytes) -> None:
    before = baseline
    for unit in UNITS[1:]:
        interrupted(api, "/sdapi/v1/txt2img", _with_unit(ad_payload({}, steps=400), unit, cn_model, frames_dir))
        assert plain(api) == before, unit
