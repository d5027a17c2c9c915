"""AnimateDiff-SDXL and HotShot-XL in a live A1111 1.10 with a tiny random SDXL checkpoint.

The session's WebUI starts with the tiny SD1.5 checkpoint; this module writes the tiny SDXL one
(tests/fixtures/webui_checkpoint_xl.py: sgm conditioners, tiny CLIP-L and OpenCLIP-bigG-layout text
encoders, text-time embedding) into ``<data-dir>/models/Stable-diffusion``, switches to it for its tests
and back at the end. Motion modules match its UNet (channels 32/64/128): AnimateDiff-SDXL (original
layout, and the diffusers layout), HotShot-XL raw (``hsxl_temporal_layers``) and converted, plus an SD1.5
module for the refusal. Live previews are off while SDXL is loaded: A1111 would download its SDXL
approximate-VAE for them. Needs a WebUI this session launched (a data dir to write into).
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import imageio.v3 as iio
import numpy as np
import pytest
from PIL import Image

from tests.fixtures.motion_modules import build_state_dict, write_checkpoint

from .checks import TRAVEL, assert_img2img_fades, assert_prompt_travel
from .client import FRAMES_ONLY, WebUIClient, WebUIError, frame_pixels, gif_frames, png_bytes, tiny_txt2img, videos
from .launcher import WebUISession

SDXL_MODULES = {  # file -> (fixture family, layout, detected family)
    "xl_sdxl.safetensors": ("sdxl", "original", "sdxl"),
    "xl_sdxl_diffusers.safetensors": ("sdxl", "diffusers", "sdxl"),
    "xl_hotshot_raw.safetensors": ("hotshot", "hotshot", "hotshot"),
    "xl_hotshot.safetensors": ("hotshot", "original", "hotshot"),
}
SD15_MODULE = "xl_v2_for_sd15.safetensors"
XL_OPTIONS = {"live_previews_enable": False}


@pytest.fixture(scope="module")
def xl_modules(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("animatediff-xl-models")
    for name, (family, layout, _) in SDXL_MODULES.items():
        write_checkpoint(folder / name, build_state_dict(family, seed=5, layout=layout))
    write_checkpoint(folder / SD15_MODULE, build_state_dict("v2", seed=5))
    return folder


@pytest.fixture(scope="module")
def sdxl_loaded(webui_session: WebUISession) -> Iterator[str]:
    """Load the tiny SDXL checkpoint for this module's tests; put the previous one (and options) back."""
    if webui_session.data_dir is None:
        pytest.skip("the SDXL tier writes a checkpoint into the WebUI's data dir: needs ANIMATEDIFF_WEBUI_DIR")
    from tests.fixtures.webui_checkpoint_xl import build_tiny_sdxl_checkpoint

    client = WebUIClient(webui_session.url)
    checkpoint = build_tiny_sdxl_checkpoint(webui_session.data_dir / "models" / "Stable-diffusion")
    client.post("/sdapi/v1/refresh-checkpoints")
    before = client.options()
    previous = {k: before[k] for k in ("sd_model_checkpoint", *XL_OPTIONS)}
    client.post("/sdapi/v1/options", {**XL_OPTIONS, "sd_model_checkpoint": checkpoint.name})
    try:
        assert client.options()["sd_model_checkpoint"].startswith("tiny-sdxl"), client.options()["sd_model_checkpoint"]
        yield previous["sd_model_checkpoint"]
    finally:
        client.post("/sdapi/v1/options", previous)


@pytest.fixture
def api(webui: WebUIClient, xl_modules: Path, sdxl_loaded: str) -> WebUIClient:
    webui.post("/sdapi/v1/options", {"animatediff_model_path": str(xl_modules)})
    return webui


def ad_payload(ad: dict[str, Any], **extra: Any) -> dict[str, Any]:
    args = {"enable": True, "model": "xl_sdxl.safetensors", "format": ["GIF"], "video_length": 8,
            "batch_size": 8, **ad}
    return tiny_txt2img(seed=7, alwayson_scripts={"AnimateDiff": {"args": [args]}}, **extra)



def plain(api: WebUIClient) -> bytes:
    return png_bytes(api.txt2img(**tiny_txt2img(seed=99)))[0]


@pytest.mark.parametrize("name", list(SDXL_MODULES))
def test_txt2img_with_each_sdxl_module(api: WebUIClient, name: str) -> None:
    response = api.post("/sdapi/v1/txt2img", ad_payload({"model": name}))
    frames = gif_frames(videos(response)[0])
    assert len(frames) == 8 and frames[0].size == (64, 64)
    assert frames[0].tobytes() != frames[-1].tobytes()
    info = json.loads(response["info"])
    assert info["sd_model_name"] == "tiny-sdxl"
    entry = info["extra_generation_params"]["AnimateDiff"]
    assert f"model: {name}" in entry and f"family: {SDXL_MODULES[name][2]}" in entry
    assert "AnimateDiff notes" not in info["extra_generation_params"]


def test_layouts_of_one_module_give_the_same_video(api: WebUIClient) -> None:
    """Same tensors in two layouts: the same frames (the files differ: the metadata names the module)."""
    pairs = (("xl_sdxl.safetensors", "xl_sdxl_diffusers.safetensors"),
             ("xl_hotshot.safetensors", "xl_hotshot_raw.safetensors"))
    for first, second in pairs:
        a = videos(api.post("/sdapi/v1/txt2img", ad_payload({"model": first, "video_length": 6})))[0]
        b = videos(api.post("/sdapi/v1/txt2img", ad_payload({"model": second, "video_length": 6})))[0]
        assert [f.tobytes() for f in gif_frames(a)] == [f.tobytes() for f in gif_frames(b)], (first, second)


@pytest.mark.parametrize(("name", "frame_independent"), [("xl_sdxl.safetensors", True),
                                                      ("xl_hotshot.safetensors", False)])  # GroupNorm pools frames
def test_prompt_travel_gives_each_frame_its_keyframes_cond(api: WebUIClient, name: str,
                                                            frame_independent: bool) -> None:
    def frames_of(prompt: str, scale: float) -> list[np.ndarray]:
        ad = {"model": name, "format": FRAMES_ONLY, "motion_scale": scale}
        return frame_pixels(api.post("/sdapi/v1/txt2img", ad_payload(ad, prompt=prompt)))

    assert_prompt_travel(frames_of, frame_independent=frame_independent)


@pytest.mark.parametrize(("name", "context"), [("xl_sdxl.safetensors", 8), ("xl_hotshot.safetensors", 8)])
def test_context_windows(api: WebUIClient, name: str, context: int) -> None:
    windowed = api.post("/sdapi/v1/txt2img", ad_payload(
        {"model": name, "video_length": 14, "batch_size": context, "overlap": 2, "closed_loop": "R-P"}))
    frames = gif_frames(videos(windowed)[0])
    assert len(frames) == 14 and frames[0].tobytes() != frames[-1].tobytes()
    entry = json.loads(windowed["info"])["extra_generation_params"]["AnimateDiff"]
    assert f"context: {context}" in entry and "overlap: 2" in entry
    whole = api.post("/sdapi/v1/txt2img", ad_payload(
        {"model": name, "video_length": 14, "batch_size": 14, "closed_loop": "R-P"}))
    assert [f.tobytes() for f in gif_frames(videos(whole)[0])] != [f.tobytes() for f in frames]


@pytest.mark.parametrize(("name", "frame_independent"), [("xl_sdxl.safetensors", True),
                                                      ("xl_hotshot_raw.safetensors", False)])
def test_img2img_fades_the_init_and_last_images(api: WebUIClient, name: str, frame_independent: bool) -> None:
    assert_img2img_fades(api, name, frame_independent=frame_independent)


def test_every_format_decodes(api: WebUIClient) -> None:
    response = api.post("/sdapi/v1/txt2img", ad_payload(
        {"format": ["GIF", "MP4", "WEBP", "WEBM", "PNG", "TXT"], "video_length": 6, "fps": 8}, prompt=TRAVEL))
    gif, mp4, webp, webm = videos(response)
    assert gif[:6] == b"GIF89a" and mp4[4:8] == b"ftyp" and webp[8:12] == b"WEBP" and webm[:4] == b"\x1aE\xdf\xa3"
    assert Image.open(io.BytesIO(webp)).n_frames == 6
    for data, ext in ((mp4, ".mp4"), (webm, ".webm")):
        assert iio.imread(data, extension=ext).shape[0] == 6
    files = json.loads(response["info"])["extra_generation_params"]["AnimateDiff files"]
    assert any(f.endswith(".txt") for f in files) and any(Path(f).suffix == "" for f in files)  # PNG frame folder
    pnginfo = api.post("/sdapi/v1/png-info", {"image": base64.b64encode(gif).decode()})
    assert "model: xl_sdxl.safetensors" in pnginfo["parameters"]["AnimateDiff"]


def test_host_is_restored_after_success_and_failure(api: WebUIClient) -> None:
    before = plain(api)
    for name in ("xl_sdxl.safetensors", "xl_hotshot.safetensors"):  # HotShot: cross-frame GroupNorm on sgm's UNet
        api.post("/sdapi/v1/txt2img", ad_payload({"model": name, "video_length": 10, "batch_size": 8,
                                                  "overlap": 2}))
        assert plain(api) == before, name
    with pytest.raises(WebUIError, match="AND"):  # fails mid-sampling with the modules inserted
        api.post("/sdapi/v1/txt2img", ad_payload({}, prompt="a cat AND a dog"))
    assert plain(api) == before


def test_sd15_module_on_sdxl_is_refused(api: WebUIClient) -> None:
    with pytest.raises(WebUIError) as caught:
        api.post("/sdapi/v1/txt2img", ad_payload({"model": SD15_MODULE}))
    assert "SD1.5" in str(caught.value) and "SDXL" in str(caught.value), str(caught.value)


def test_sdxl_module_on_sd15_is_refused(api: WebUIClient, sdxl_loaded: str) -> None:
    """The reverse, with the SD1.5 checkpoint for this one request (A1111 reloads SDXL afterwards)."""
    with pytest.raises(WebUIError) as caught:
        api.post("/sdapi/v1/txt2img", ad_payload({}, override_settings={"sd_model_checkpoint": sdxl_loaded}))
    assert "SDXL" in str(caught.value) and "SD1.5" in str(caught.value), str(caught.value)
    assert api.options()["sd_model_checkpoint"].startswith("tiny-sdxl")
