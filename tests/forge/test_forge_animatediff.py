"""AnimateDiff on a live Forge (txt2img, SD1.5, the tiny V2 module), through Forge's UnetPatcher.

Skipped unless ANIMATEDIFF_FORGE_DIR is set (see conftest.py)."""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
from PIL import Image

from tests.webui.checks import assert_img2img_fades, assert_prompt_travel
from tests.webui.client import (
    FRAMES_ONLY,
    WebUIClient,
    ad_payload,
    expect_error,
    frame_pixels,
    gif_frames,
    interrupted,
    png_bytes,
    tiny_txt2img,
    videos,
)

from .conftest import ForgeSession


def frames(api: WebUIClient, ad: dict[str, Any], **extra: Any) -> list[np.ndarray]:
    """The frames of a tiny txt2img video, as pixels (lossless PNGs)."""
    return frame_pixels(api.post("/sdapi/v1/txt2img", ad_payload({**ad, "format": FRAMES_ONLY}, **extra)))


def test_request_gives_a_gif_of_n_frames(api: WebUIClient) -> None:
    response = api.post("/sdapi/v1/txt2img", ad_payload({"video_length": 6, "batch_size": 6}))
    (gif,) = videos(response)
    shot = gif_frames(gif)
    assert len(shot) == 6 and shot[0].size == (64, 64), (len(shot), shot[0].size)
    info = json.loads(response["info"])["infotexts"][0]
    assert "AnimateDiff:" in info and "tiny_v2" in info, info


def test_motion_module_changes_the_frames(api: WebUIClient) -> None:
    """Motion scale 0 adds nothing of the motion modules: with SD's own schedule it is a plain batch of the same seeds
    (within 1/255: the UNet runs cond and uncond in separate calls then); scale 1 differs from it (the modules ran),
    and so does V2's own linear schedule (it was applied)."""
    sd_schedule = {"schedule": "scaled_linear"}
    plain = [np.asarray(Image.open(io.BytesIO(b)).convert("RGB"), dtype=np.int16)
             for b in png_bytes(api.txt2img(**tiny_txt2img(seed=7, batch_size=8)))]
    still = frames(api, {**sd_schedule, "motion_scale": 0})
    moving = frames(api, sd_schedule)
    linear = frames(api, {"motion_scale": 0})  # auto: V2's training schedule (linear betas)
    assert len(still) == len(moving) == len(plain) == 8
    assert max(int(np.abs(a - b).max()) for a, b in zip(still, plain)) <= 1, "motion scale 0 must be a plain batch"
    assert min(int(np.abs(a - b).max()) for a, b in zip(moving, still)) > 2, "the motion modules changed no frame"
    # both are AnimateDiff runs with the same calls: without the schedule swap they would be identical
    assert float(np.mean([np.abs(a - b).mean() for a, b in zip(linear, still)])) > 0.1, "the schedule was not applied"


def test_windows_and_prompt_travel_run(api: WebUIClient) -> None:
    """10 frames in windows of 8 (two windows per step), prompt travel from frame 0 to 5: frames come back, and a
    travelling prompt gives other frames than a fixed one."""
    ad = {"video_length": 10, "batch_size": 8, "overlap": 2}
    travel = frames(api, ad, prompt="masterpiece\n0: a calm sea\n5: a storm, lightning\nsunset")
    fixed = frames(api, ad, prompt="masterpiece, a calm sea, sunset")
    assert len(travel) == len(fixed) == 10
    assert int(np.abs(travel[9] - fixed[9]).max()) > 0


def test_prompt_travel_gives_each_frame_its_keyframes_cond(api: WebUIClient) -> None:
    """The A1111 tier's check, on Forge: frame by frame from the first keyframe's video to the second's (with
    motion scale 0 each frame is exactly the still image of its own cond)."""
    assert_prompt_travel(lambda prompt, scale: frames(api, {"motion_scale": scale}, prompt=prompt),
                         frame_independent=True)


def test_img2img_fades_the_init_and_last_images(api: WebUIClient) -> None:
    """The A1111 tier's check, on Forge: the init image starts the video and fades out, the last image ends it."""
    assert_img2img_fades(api, "tiny_v2.safetensors", frame_independent=True)


def test_v1_freenoise_freeinit_and_hires_give_videos(api: WebUIClient) -> None:
    """V1's cross-frame GroupNorm, FreeNoise, FreeInit and hires fix each give their video, other than without.
    (Forge's API needs ``hr_additional_modules`` with hires fix: without it Forge itself fails, None is not a list.)"""
    base = {"video_length": 10, "batch_size": 8, "overlap": 2}
    plain = frames(api, base)
    hires = {"enable_hr": True, "hr_scale": 1.5, "hr_upscaler": "Latent", "hr_second_pass_steps": 1,
             "denoising_strength": 0.5, "hr_additional_modules": ["Use same choices"]}
    for ad, extra in [({"model": "tiny_v1.safetensors"}, {}), ({"freenoise": True}, {}),
                      ({"freeinit_enable": True, "freeinit_iters": 2}, {}), ({}, hires)]:
        video = frames(api, {**base, **ad}, **extra)
        assert len(video) == 10, (ad, len(video))
        if "enable_hr" in extra:
            assert video[0].shape == (96, 96, 3), video[0].shape
        else:
            assert max(int(np.abs(a - b).max()) for a, b in zip(video, plain)) > 10, ad


def test_plain_txt2img_is_byte_identical_after_a_request(api: WebUIClient, plain_forge: ForgeSession) -> None:
    """Against Forge without this extension (whatever earlier requests of this session did)."""
    reference = png_bytes(plain_forge.client().txt2img(**tiny_txt2img(seed=11)))
    api.post("/sdapi/v1/txt2img", ad_payload({"video_length": 6, "batch_size": 6}))
    assert png_bytes(api.txt2img(**tiny_txt2img(seed=11))) == reference, "the request left Forge changed"


def test_forge_is_restored_after_a_failure_and_an_interrupt(api: WebUIClient, plain_forge: ForgeSession) -> None:
    reference = png_bytes(plain_forge.client().txt2img(**tiny_txt2img(seed=13)))
    # fails mid-sampling, with the UNet patched (AND prompts give more cond rows than frames)
    expect_error(api, ad_payload({}, prompt="a cat AND a dog"), "AND")
    assert png_bytes(api.txt2img(**tiny_txt2img(seed=13))) == reference, "the failure left Forge changed"
    interrupted(api, "/sdapi/v1/txt2img", ad_payload({"video_length": 24, "overlap": 2}, steps=200))
    assert png_bytes(api.txt2img(**tiny_txt2img(seed=13))) == reference, "the interrupt left Forge changed"
