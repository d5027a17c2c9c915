"""AnimateDiff through the HTTP API of a live A1111 1.10 (skipped unless the tier is configured).

Uses tiny random motion modules matching the tiny SD1.5-shaped checkpoint (channels 32/64/128/128),
written into a temporary folder that the tests select with the `animatediff_model_path` setting.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from pathlib import Path
from typing import Any

import imageio.v3 as iio
import numpy as np
import pytest
from PIL import Image

from .checks import SECOND_KEY, TRAVEL, assert_img2img_fades, assert_prompt_travel, distances, strictly_increasing
from .client import (
    FRAMES_ONLY,
    WebUIClient,
    ad_payload,
    expect_error,
    frame_pixels,
    gif_frames,
    png_bytes,
    tiny_txt2img,
    videos,
)
from .launcher import WebUISession


def test_every_format_decodes_and_infotext_round_trips(api: WebUIClient) -> None:
    response = api.post("/sdapi/v1/txt2img", ad_payload(
        {"format": ["GIF", "MP4", "WEBP", "WEBM", "PNG", "TXT"], "video_length": 12, "overlap": 2, "fps": 8},
        prompt=TRAVEL))
    gif, mp4, webp, webm = videos(response)
    assert gif[:6] == b"GIF89a" and mp4[4:8] == b"ftyp" and webp[8:12] == b"WEBP" and webm[:4] == b"\x1aE\xdf\xa3"
    image = Image.open(io.BytesIO(gif))
    assert (image.n_frames, image.size) == (12, (64, 64))
    durations = []
    for index in range(12):
        image.seek(index)
        durations.append(image.info["duration"])
    assert abs(sum(durations) - 1500) <= 10
    assert Image.open(io.BytesIO(webp)).n_frames == 12
    for data, ext in ((mp4, ".mp4"), (webm, ".webm")):
        assert iio.imread(data, extension=ext).shape[0] == 12
    info = json.loads(response["info"])
    files = info["extra_generation_params"]["AnimateDiff files"]
    assert any(f.endswith(".txt") for f in files) and any(Path(f).suffix == "" for f in files)
    for data in (gif, webp):
        pnginfo = api.post("/sdapi/v1/png-info", {"image": base64.b64encode(data).decode()})
        text = pnginfo["info"]
        assert text.startswith(TRAVEL + "\n"), text[:200]  # the original multi-line travel prompt
        assert "enable: True" in pnginfo["parameters"]["AnimateDiff"]
        assert "video_length: 12" in pnginfo["parameters"]["AnimateDiff"]
        assert "model: tiny_v2.safetensors" in pnginfo["parameters"]["AnimateDiff"]


@pytest.mark.parametrize(("ad", "needles"), [
    ({"reverse": True}, ["reverse", "Known"]),
    ({"closed_loop": True}, ["closed_loop", "R-P"]),
    ({"video_length": "many"}, ["video_length"]),
    ({"overlap": 9}, ["overlap"]),
    ({"model": "missing.safetensors"}, ["missing.safetensors", "not found"]),
    ({"model": "tiny_sdxl.safetensors"}, ["SDXL"]),
    ({"model": "tiny_v1.safetensors", "batch_size": 32}, ["24"]),
    ({"model": "../../etc/passwd"}, ["model"]),
    ({"request_id": "../x"}, ["request_id"]),
])
def test_bad_requests_fail_with_a_named_field(api: WebUIClient, ad: dict[str, Any], needles: list[str]) -> None:
    expect_error(api, ad_payload(ad), *needles)


def test_format_as_string_is_accepted(api: WebUIClient) -> None:
    response = api.post("/sdapi/v1/txt2img", ad_payload({"format": "gif,webp", "video_length": 4}))
    kinds = [v[:4] for v in videos(response)]
    assert kinds == [b"GIF8", b"RIFF"]


def plain(api: WebUIClient) -> bytes:
    return png_bytes(api.txt2img(**tiny_txt2img(seed=99)))[0]


def test_host_is_restored_after_success_failure_and_interrupt(api: WebUIClient) -> None:
    before = plain(api)
    api.post("/sdapi/v1/txt2img", ad_payload({"model": "tiny_v1.safetensors", "video_length": 10, "overlap": 2}))
    assert plain(api) == before
    # fails mid-sampling, with the modules inserted (AND prompts give more cond rows than frames)
    expect_error(api, ad_payload({}, prompt="a cat AND a dog"), "AND")
    assert plain(api) == before
    # interrupted mid-sampling
    worker = threading.Thread(target=lambda: api.post("/sdapi/v1/txt2img", ad_payload(
        {"video_length": 24, "overlap": 2}, steps=30)))
    worker.start()
    time.sleep(3.0)
    api.interrupt()
    worker.join(timeout=600)
    assert not worker.is_alive()
    assert plain(api) == before


LONG = ", ".join(f"detailed word{i}" for i in range(60))  # > 75 tokens: cond 154 rows, uncond 77


@pytest.mark.parametrize("cfg", [7.0, 1.0])
def test_same_video_with_batch_cond_uncond_on_or_off(api: WebUIClient, cfg: float) -> None:
    results = []
    for batch in (True, False):
        payload = ad_payload({"video_length": 10, "overlap": 2}, prompt=LONG, cfg_scale=cfg,
                             override_settings={"batch_cond_uncond": batch, "pad_cond_uncond": False,
                                                "pad_cond_uncond_v0": False})
        results.append(videos(api.post("/sdapi/v1/txt2img", payload))[0])
    assert results[0] == results[1]


def frames(api: WebUIClient, ad: dict[str, Any], **extra: Any) -> list[np.ndarray]:
    """The frames of a tiny txt2img video, as pixels (lossless PNGs)."""
    return frame_pixels(api.post("/sdapi/v1/txt2img", ad_payload({**ad, "format": FRAMES_ONLY}, **extra)))


LOOP = {"video_length": 10, "batch_size": 8, "overlap": 2}  # two context windows of 8 frames per step
# frames 1-9 get the second keyframe's cond exactly, wrapping or not (keyframes 1 and 9 hold the same prompt)
FRAME_0_APART = "masterpiece\n0: a calm sea\n1: a storm, lightning\n9: a storm, lightning\nsunset"


@pytest.mark.parametrize(("mode", "wraps"), [("N", False), ("R-P", True), ("R+P", True), ("A", True)])
def test_closed_loop_windows_wrap_around_the_end(api: WebUIClient, mode: str, wraps: bool) -> None:
    """Only frame 0's prompt differs; with one sampling step a frame changes only where it shares a context
    window with frame 0. In N the windows are frames 0-7 and 2-9, so frames 8 and 9 stay the same; in the other
    modes the windows wrap around the end and every frame changes. A keeps its 10 frames (the clip is longer
    than the context: no ping-pong)."""
    ad = {**LOOP, "closed_loop": mode}
    changed = distances(frames(api, ad, prompt=SECOND_KEY, steps=1), frames(api, ad, prompt=FRAME_0_APART, steps=1))
    assert len(changed) == 10
    if wraps:
        assert all(d > 0 for d in changed), changed
    else:
        assert all(d > 0 for d in changed[:8]) and changed[8:] == [0, 0], changed


@pytest.mark.parametrize(("mode", "wraps"), [("R-P", False), ("R+P", True), ("A", True)])
def test_closed_loop_prompt_travel_wraps(api: WebUIClient, mode: str, wraps: bool) -> None:
    """Keyframes at frames 0 and 5 of 10, against the second keyframe's prompt alone, with motion_scale 0 (each
    frame is the still image of its own cond): frames 0-4 differ (the first keyframe, then the slerp towards the
    second) and frame 5 is the same. After it R-P holds the second prompt; R+P and A travel back towards the
    first, further with every frame."""
    ad = {**LOOP, "closed_loop": mode, "motion_scale": 0}
    travel = frames(api, ad, prompt="masterpiece\n0: a calm sea\n5: a storm, lightning\nsunset")
    changed = distances(travel, frames(api, ad, prompt=SECOND_KEY))
    assert all(d > 0 for d in changed[:5]) and changed[5] == 0, changed
    if wraps:
        assert strictly_increasing(changed[5:]), changed
    else:
        assert changed[6:] == [0, 0, 0, 0], changed


def test_closed_loop_a_plays_a_short_clip_forward_then_backward(api: WebUIClient) -> None:
    """Mode A on a clip no longer than the context: N's frames (one window, nothing to wrap) followed by frames
    4 to 1 (2L-2 = 10 frames): frame k is frame 10-k."""
    loop = frames(api, {"video_length": 6, "closed_loop": "A"})
    plain = frames(api, {"video_length": 6, "closed_loop": "N"})
    assert len(loop) == 10 and len(plain) == 6
    assert all(d > 0 for d in distances(plain[1:], plain[:-1]))  # a video, not one still
    assert all(np.array_equal(a, n) for a, n in zip(loop, plain))
    assert all(np.array_equal(loop[k], loop[10 - k]) for k in range(1, 10))


def test_prompt_travel_gives_each_frame_its_keyframes_cond(api: WebUIClient) -> None:
    assert_prompt_travel(lambda prompt, scale: frames(api, {"motion_scale": scale}, prompt=prompt),
                         frame_independent=True)


def test_img2img_fades_the_init_and_last_images(api: WebUIClient) -> None:
    assert_img2img_fades(api, "tiny_v2.safetensors", frame_independent=True)


def test_n_iter_two_gives_two_videos_with_their_own_seeds(api: WebUIClient) -> None:
    response = api.post("/sdapi/v1/txt2img", ad_payload({"video_length": 6}, n_iter=2))
    first, second = videos(response)
    assert first != second
    info = json.loads(response["info"])
    names = [Path(f).name for f in info["extra_generation_params"]["AnimateDiff files"]]
    assert len(names) == 2 and names[0].endswith("-7.gif") and names[1].endswith("-13.gif")


def test_lightning_recipe(api: WebUIClient) -> None:
    response = api.post("/sdapi/v1/txt2img", ad_payload(
        {"model": "tiny_lightning.safetensors", "video_length": 8}, sampler_name="Euler", scheduler="SGM Uniform",
        cfg_scale=1.0, steps=2))
    assert videos(response)[0][:6] == b"GIF89a"
    assert "AnimateDiff notes" not in json.loads(response["info"])["extra_generation_params"]
    hinted = api.post("/sdapi/v1/txt2img", ad_payload({"model": "tiny_lightning.safetensors", "video_length": 4},
                                                     steps=4, sampler_name="DPM++ 2M"))
    notes = json.loads(hinted["info"])["extra_generation_params"]["AnimateDiff notes"]
    assert "SGM Uniform" in notes[0]


def test_freeinit_runs_more_passes_and_changes_the_video(api: WebUIClient) -> None:
    plain_video = videos(api.post("/sdapi/v1/txt2img", ad_payload({"video_length": 8})))[0]
    free = api.post("/sdapi/v1/txt2img", ad_payload({"video_length": 8, "freeinit_enable": True,
                                                     "freeinit_iters": 2, "freeinit_filter": "gaussian"}))
    free_video = videos(free)[0]
    assert free_video[:6] == b"GIF89a" and free_video != plain_video
    assert "freeinit_filter: gaussian" in json.loads(free["info"])["infotexts"][0]
    expect_error(api, ad_payload({"freeinit_enable": True}, enable_hr=True, hr_scale=1.5), "FreeInit")


def test_hires_fix_second_pass_keeps_the_video(api: WebUIClient) -> None:
    response = api.post("/sdapi/v1/txt2img", ad_payload(
        {"video_length": 10, "overlap": 2}, enable_hr=True, hr_scale=1.5, hr_upscaler="Latent",
        hr_second_pass_steps=1, denoising_strength=0.5))
    frames = gif_frames(videos(response)[0])
    assert len(frames) == 10 and frames[0].size == (96, 96)


def test_infotext_paste_restores_the_animatediff_settings(api: WebUIClient) -> None:
    """The API's `infotext` field goes through the same paste path as the UI's PNG Info > Send to txt2img."""
    first = api.post("/sdapi/v1/txt2img", ad_payload({"video_length": 6, "closed_loop": "N", "fps": 12,
                                                      "format": ["GIF"]}, prompt=TRAVEL))
    text = json.loads(first["info"])["infotexts"][0]
    again = api.post("/sdapi/v1/txt2img", {"infotext": text})
    gif = videos(again)[0]
    assert gif[:6] == b"GIF89a" and len(gif_frames(gif)) == 6
    restored = json.loads(again["info"])["infotexts"][0]
    assert "closed_loop: N" in restored and "fps: 12" in restored and restored.startswith(TRAVEL)
    assert gif == videos(first)[0]  # same seed, prompt, settings and module: the same video


def test_plain_request_with_controlnet_loaded(api: WebUIClient, webui_session: WebUISession) -> None:
    """ControlNet's always-on script runs (no units) around an AnimateDiff request without errors."""
    if not webui_session.controlnet_expected:
        pytest.skip("ControlNet is not linked into this WebUI (see ANIMATEDIFF_WEBUI_CONTROLNET)")
    assert "controlnet" in api.script_names("txt2img")
    log = webui_session.log_path

    def script_errors() -> int:
        return log.read_text(encoding="utf-8", errors="replace").count("*** Error") if log else 0

    errors = script_errors()
    frames = gif_frames(videos(api.post("/sdapi/v1/txt2img", ad_payload({"video_length": 6})))[0])
    assert len(frames) == 6 and frames[0].tobytes() != frames[-1].tobytes()
    assert script_errors() == errors, log.read_text(encoding="utf-8", errors="replace")[-4000:] if log else ""


def test_motion_module_window_mode(api: WebUIClient) -> None:
    """12 frames, context 8: whole-UNet windows and motion-module windows both give a 12-frame video; the mode
    is recorded in infotext only when it is not the default."""
    gifs, infos = [], []
    for mode in ("unet", "motion_module"):
        response = api.post("/sdapi/v1/txt2img", ad_payload({"video_length": 12, "window_mode": mode, "overlap": 2}))
        gifs.append(videos(response)[0])
        infos.append(json.loads(response["info"])["infotexts"][0])
    assert [len(gif_frames(g)) for g in gifs] == [12, 12] and gifs[0] != gifs[1]
    assert "window_mode" not in infos[0] and "window_mode: motion_module" in infos[1]


def test_freenoise_reschedules_the_initial_noise(api: WebUIClient) -> None:
    plain = api.post("/sdapi/v1/txt2img", ad_payload({"video_length": 12, "overlap": 2}))
    free = api.post("/sdapi/v1/txt2img", ad_payload({"video_length": 12, "overlap": 2, "freenoise": True}))
    assert len(gif_frames(videos(free)[0])) == 12 and videos(free)[0] != videos(plain)[0]
    assert "freenoise: True" in json.loads(free["info"])["infotexts"][0]
    assert "freenoise" not in json.loads(plain["info"])["infotexts"][0]


def test_motion_scale_and_loading_without_the_cache(api: WebUIClient) -> None:
    full = api.post("/sdapi/v1/txt2img", ad_payload({"video_length": 6}))
    calm = api.post("/sdapi/v1/txt2img", ad_payload({"video_length": 6, "motion_scale": 0.5}))
    assert videos(calm)[0] != videos(full)[0]
    assert "motion_scale: 0.5" in json.loads(calm["info"])["infotexts"][0]
    assert "motion_scale" not in json.loads(full["info"])["infotexts"][0]
    api.post("/sdapi/v1/options", {"animatediff_keep_models": False})
    try:
        again = api.post("/sdapi/v1/txt2img", ad_payload({"video_length": 6}))
    finally:
        api.post("/sdapi/v1/options", {"animatediff_keep_models": True})
    assert videos(again)[0] == videos(full)[0]  # a module read afresh gives the same video


def test_motion_scale_keyframes(api: WebUIClient) -> None:
    """Keyframes holding 0.5 on every frame give motion_scale 0.5's frames byte for byte; a ramp differs, in both
    window modes, and is written to infotext; a keyframe past the last frame is a 422 naming the field."""
    half = api.post("/sdapi/v1/txt2img", ad_payload({"video_length": 6, "motion_scale": 0.5}))
    held = api.post("/sdapi/v1/txt2img", ad_payload({"video_length": 6, "motion_scale_keyframes": "0: 0.5, 5: 0.5"}))
    assert [f.tobytes() for f in gif_frames(videos(held)[0])] == [f.tobytes() for f in gif_frames(videos(half)[0])]
    ramps = [api.post("/sdapi/v1/txt2img", ad_payload({"video_length": 12, "overlap": 2, "window_mode": mode,
                                                       "motion_scale_keyframes": "0: 0, 11: 1.5"}))
             for mode in ("unet", "motion_module")]
    assert [len(gif_frames(videos(r)[0])) for r in ramps] == [12, 12]
    assert 'motion_scale_keyframes: \\"0: 0, 11: 1.5\\"' in json.loads(ramps[0]["info"])["infotexts"][0]  # quoted twice
    body = expect_error(api, ad_payload({"video_length": 6, "motion_scale_keyframes": "8: 1"}),
                        "motion_scale_keyframes")
    assert "HTTP 422" in body and "6 frames" in body
