"""What prompt travel and img2img must do to the frames, checked alike on the SD1.5 and the SDXL checkpoint.

Frames come back as lossless PNGs (``FRAMES_ONLY``) and are compared by pixels, never as video files: a GIF
embeds its own prompt, so two GIFs differ even when their frames do not. With ``motion_scale`` 0 the motion
modules add nothing, so for modules whose other layers treat each frame alone (V2, AnimateDiff-SDXL; not
HotShot, whose GroupNorm pools over every frame) each frame is exactly the still image of its own inputs: there
the checks are exact. With the motion modules on, frames also see each other, and the checks are about which
reference a frame is nearer to.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .client import FRAMES_ONLY, WebUIClient, frame_pixels, png_b64

Frames = list[np.ndarray]

# 8 frames: frame 0 gets FIRST_KEY's cond, frames 1-3 a slerp from it towards SECOND_KEY's, frames 4-7 SECOND_KEY's
TRAVEL = "masterpiece\n0: a calm sea\n4: a storm, lightning\nsunset"
FIRST_KEY, SECOND_KEY = "masterpiece, a calm sea, sunset", "masterpiece, a storm, lightning, sunset"
SECOND_FRAME = 4


def distance(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two same-size frames, in pixel levels (0..255)."""
    return float(np.abs(a - b).mean())


def distances(a: Frames, b: Frames) -> list[float]:
    assert len(a) == len(b), (len(a), len(b))
    return [distance(x, y) for x, y in zip(a, b)]


def strictly_increasing(values: list[float]) -> bool:
    return all(x < y for x, y in zip(values, values[1:]))


def assert_prompt_travel(frames_of: Callable[[str, float], Frames], *, frame_independent: bool) -> None:
    """``frames_of(prompt, motion_scale)``: an 8-frame video of one seed. TRAVEL's video is compared with the
    videos of its two keyframe prompts alone (the same seed): up to the second keyframe it goes from the first
    prompt's video to the second's, and from there on it is the second's."""
    for scale in (1.0, 0.0) if frame_independent else (1.0,):
        travel, first, second = (frames_of(prompt, scale) for prompt in (TRAVEL, FIRST_KEY, SECOND_KEY))
        assert len(travel) == 8
        to_first, to_second = distances(travel, first), distances(travel, second)
        lean = [a - b for a, b in zip(to_first, to_second)]  # > 0: nearer the second prompt's frame
        message = f"motion_scale {scale}: to the first prompt {to_first}, to the second {to_second}"
        assert all(x > 0 for x in lean[SECOND_FRAME:]), message  # the second keyframe's prompt holds to the end
        assert lean[0] < min(lean[SECOND_FRAME:]), message  # frame 0 leans to the first prompt
        if scale == 0.0:  # each frame is the still image of its own cond
            assert np.array_equal(travel[0], first[0]), message
            assert all(np.array_equal(t, s) for t, s in zip(travel[SECOND_FRAME:], second[SECOND_FRAME:])), message
            # frames 1-3: strictly between, moving away from the first prompt and towards the second
            assert strictly_increasing(to_first[:SECOND_FRAME + 1]), message
            assert strictly_increasing([-x for x in to_second[:SECOND_FRAME + 1]]), message


RED, GREEN, BLUE = (200, 30, 30), (30, 200, 30), (30, 30, 200)
# 6 frames; latent_scale 3: init-image weight a_i = 1, 2/3, 1/3, 0, 0, 0; latent_scale_last 2: last-image weight
# b_i = 0, 0, 0, 0, 1/2, 1 (README "img2img", motion_module/core/latent_init.py); A1111's noise for the denoising
# strength comes on top. A low strength (0.3) keeps the images' share large at 2 steps.
IMG2IMG_FRAMES, LATENT_SCALE, LATENT_SCALE_LAST = 6, 3, 2


def img2img_frames(api: WebUIClient, model: str, init: tuple[int, int, int], last: tuple[int, int, int],
                   motion_scale: float) -> Frames:
    payload: dict[str, Any] = {
        "init_images": [png_b64(init)], "denoising_strength": 0.3, "prompt": "a red square",
        "steps": 2, "width": 64, "height": 64, "seed": 3, "sampler_name": "Euler", "cfg_scale": 7,
        "alwayson_scripts": {"AnimateDiff": {"args": [{
            "enable": True, "model": model, "format": FRAMES_ONLY, "video_length": IMG2IMG_FRAMES,
            "batch_size": IMG2IMG_FRAMES, "motion_scale": motion_scale, "last_frame": png_b64(last),
            "latent_scale": LATENT_SCALE, "latent_scale_last": LATENT_SCALE_LAST}]}},
    }
    return frame_pixels(api.post("/sdapi/v1/img2img", payload))


def assert_img2img_fades(api: WebUIClient, model: str, *, frame_independent: bool) -> None:
    """The init image starts the first frame and fades out over ``latent_scale`` frames; the last image ends
    the video, fading in over ``latent_scale_last`` frames: changing one image changes the frames where it
    has weight, most where its weight is 1."""
    for scale in (1.0, 0.0) if frame_independent else (1.0,):
        # A1111 encodes the init image (and AnimateDiff the last one) by sampling the VAE's posterior with the
        # global torch RNG, which the previous request left seeded with its last frame's seed; the tiny random
        # VAE's posterior is wide. An img2img with the same seeds first gives every compared run the same draws.
        img2img_frames(api, model, RED, BLUE, scale)
        base = img2img_frames(api, model, RED, BLUE, scale)
        assert len(base) == IMG2IMG_FRAMES
        by_init = distances(base, img2img_frames(api, model, GREEN, BLUE, scale))
        by_last = distances(base, img2img_frames(api, model, RED, GREEN, scale))
        message = f"motion_scale {scale}: changing the init image {by_init}, the last image {by_last}"
        # most where the image's weight is 1, several times more than where it is 0 (frames see each other)
        assert max(by_init) == by_init[0] and by_init[0] > 5 * max(by_init[LATENT_SCALE:]), message
        assert max(by_last) == by_last[-1] and by_last[-1] > 4 * max(by_last[:-LATENT_SCALE_LAST]), message
        if scale == 0.0:  # exactly where each image has weight, less where it has less
            fade_in = IMG2IMG_FRAMES - LATENT_SCALE_LAST
            assert all(d == 0 for d in by_init[LATENT_SCALE:]), message
            assert strictly_increasing([-d for d in by_init[:LATENT_SCALE]]) and by_init[LATENT_SCALE - 1] > 0, message
            assert all(d == 0 for d in by_last[:fade_in]), message
            assert strictly_increasing(by_last[fade_in:]) and by_last[fade_in] > 0, message
