"""Video-to-video on a live Forge with its built-in ControlNet and the tiny random Control-LoRA
(tests/fixtures/forge_controlnet.py): one hint per frame from a frames folder, a video source or a unit's own batch
folder; every context window sees exactly its frames' hints; a plain generation is unchanged afterwards.

Forge runs its ControlNet once per sampler call over the whole batch, before the UNet function wrapper, and the
windowed wrapper hands each UNet call the control residuals of its own rows (animatediff_hosts/forge.py
``video_input``).
Skipped unless ANIMATEDIFF_FORGE_DIR is set (see conftest.py). Server-side inputs are written into the launched
Forge's data folder (the folders AnimateDiff may read).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.fixtures.controlnet_units import BAR_SIZE as SIZE
from tests.fixtures.controlnet_units import api_unit, bar_frame, bar_frames_folder, lossless_video, png_b64
from tests.webui.client import FRAMES_ONLY, WebUIClient, expect_error, frame_pixels, png_bytes, tiny_txt2img, videos

from .conftest import ForgeSession


@pytest.fixture(scope="module")
def cn_model(forge_session: ForgeSession) -> str:
    listed = forge_session.client().get("/controlnet/model_list")["model_list"]
    models = [m for m in listed if m.startswith("tiny-controlnet-forge")]
    assert models, listed
    return str(models[0])


@pytest.fixture(scope="module")
def inputs(forge_session: ForgeSession) -> Path:
    folder = forge_session.data_dir / "v2v-inputs"
    folder.mkdir(exist_ok=True)
    return folder


def unit(model: str, **extra: Any) -> dict[str, Any]:
    return api_unit(model, extra.pop("module", "None"), **extra)


def v2v(api: WebUIClient, ad: dict[str, Any], *units: dict[str, Any]) -> list[np.ndarray]:
    """The frames (int16 RGB) of an AnimateDiff txt2img with ControlNet ``units``."""
    args = {"enable": True, "model": "tiny_v2.safetensors", "format": FRAMES_ONLY, "video_length": 0,
            "batch_size": 4, "closed_loop": "N", **ad}
    payload = tiny_txt2img(seed=11, alwayson_scripts={"AnimateDiff": {"args": [args]},
                                                      "ControlNet": {"args": list(units)}})
    return frame_pixels(api.post("/sdapi/v1/txt2img", payload))


def test_each_window_sees_exactly_its_frames_hints(api: WebUIClient, cn_model: str, inputs: Path) -> None:
    """12 frames, context 4, no overlap: windows 0-3, 4-7, 8-11 at every step. Two runs whose control frames differ
    only at frame 1: frame 1 changes, frames 8-11 never share a window with it and must be bit-identical."""
    base = bar_frames_folder(inputs / "k-base", list(range(12)))
    changed = bar_frames_folder(inputs / "k-changed", [0, 40, *range(2, 12)])
    ad = {"video_length": 12, "batch_size": 4, "overlap": 0}
    a = v2v(api, {**ad, "video_path": str(base)}, unit(cn_model))
    b = v2v(api, {**ad, "video_path": str(changed)}, unit(cn_model))
    assert len(a) == len(b) == 12
    assert int(np.abs(a[1] - b[1]).max()) > 10, "frame 1's own hint did not reach it"
    for k in range(8, 12):
        np.testing.assert_array_equal(a[k], b[k], err_msg=f"frame {k} saw frame 1's control")


def test_each_frame_follows_its_own_hint(api: WebUIClient, cn_model: str, inputs: Path) -> None:
    """Motion scale 0 (frames independent), 8 frames in overlapping windows of 4: frame k of a video whose control
    frames all differ equals frame k of the video whose unit has frame k's image alone (one image, broadcast to
    every frame), for a frame in the first and one in the last window; and those two references differ."""
    folder = bar_frames_folder(inputs / "own-hints", list(range(8)))
    ad = {"video_length": 8, "batch_size": 4, "overlap": 2, "motion_scale": 0}
    video = v2v(api, {**ad, "video_path": str(folder)}, unit(cn_model))
    assert len(video) == 8
    references = {k: v2v(api, ad, unit(cn_model, image=png_b64(bar_frame(k))))[k] for k in (1, 6)}
    assert int(np.abs(references[1] - references[6]).max()) > 10, "the hints make no difference"
    for k, reference in references.items():
        assert int(np.abs(video[k] - reference).max()) <= 1, f"frame {k} did not get its own hint"


def test_video_source_and_a_units_own_batch_folder_give_the_frames_video(api: WebUIClient, cn_model: str,
                                                                        inputs: Path) -> None:
    """The same six control frames from a frames folder (video_path), a lossless video (video_source) and the
    unit's own batch folder (Forge's ``batch_image_dir``, with a longer video_path beside it: the unit's folder
    wins and sets the length) give the same video, bit for bit."""
    folder = bar_frames_folder(inputs / "six", list(range(6)))
    by_path = v2v(api, {"video_path": str(folder)}, unit(cn_model))
    by_source = v2v(api, {"video_source": str(lossless_video(inputs / "six.mkv", 6))}, unit(cn_model))
    longer = bar_frames_folder(inputs / "nine", [20 + i for i in range(9)])
    by_unit = v2v(api, {"video_path": str(longer)}, unit(cn_model, input_mode="batch", batch_image_dir=str(folder)))
    assert len(by_path) == len(by_source) == len(by_unit) == 6
    for k in range(6):
        np.testing.assert_array_equal(by_source[k], by_path[k], err_msg=f"video_source, frame {k}")
        np.testing.assert_array_equal(by_unit[k], by_path[k], err_msg=f"the unit's own folder, frame {k}")


def test_plain_txt2img_is_byte_identical_after_v2v(api: WebUIClient, plain_forge: ForgeSession, cn_model: str,
                                                   inputs: Path) -> None:
    reference = png_bytes(plain_forge.client().txt2img(**tiny_txt2img(seed=99)))
    v2v(api, {"video_path": str(bar_frames_folder(inputs / "restore", list(range(6))))}, unit(cn_model))
    assert png_bytes(api.txt2img(**tiny_txt2img(seed=99))) == reference, "V2V left Forge changed"
    v2v(api, {"video_length": 6}, unit(cn_model, image=png_b64(bar_frame(3))))
    assert png_bytes(api.txt2img(**tiny_txt2img(seed=99))) == reference, "a ControlNet unit left Forge changed"


def test_clear_errors(api: WebUIClient, cn_model: str, inputs: Path) -> None:
    short = bar_frames_folder(inputs / "short", list(range(5)))
    args = {"enable": True, "model": "tiny_v2.safetensors", "format": ["GIF"], "video_length": 9, "batch_size": 4}

    def payload(ad: dict[str, Any]) -> dict[str, Any]:
        return tiny_txt2img(seed=1, alwayson_scripts={"AnimateDiff": {"args": [{**args, **ad}]},
                                                      "ControlNet": {"args": [unit(cn_model)]}})

    body = expect_error(api, payload({"video_path": str(short)}), "ControlNet unit 0", "5", "9")
    assert "HTTP 422" in body, body
    body = expect_error(api, payload({}), "has no input")
    assert "HTTP 422" in body, body
    assert videos(api.post("/sdapi/v1/txt2img", payload({"video_path": str(short), "video_length": 0})))


@pytest.mark.parametrize("extra", [
    {"enable_hr": True, "hr_scale": 1.5, "hr_upscaler": "Latent", "hr_second_pass_steps": 1,
     "denoising_strength": 0.5, "hr_additional_modules": ["Use same choices"]},
    {"freeinit": True},
    {"window_mode": "motion_module"},
], ids=["hires", "freeinit", "motion_module_windows"])
def test_v2v_with_hires_freeinit_and_module_windows(api: WebUIClient, cn_model: str, inputs: Path,
                                                   extra: dict[str, Any]) -> None:
    """Hires fix (the second pass gets ControlNet's hires-sized hints), FreeInit (ControlNet is patched into every
    sampling) and motion-module windows, with prompt travel: a video of the folder's length, other than the same
    request without the unit."""
    folder = bar_frames_folder(inputs / "hires", list(range(8)))
    ad: dict[str, Any] = {"video_path": str(folder), "overlap": 2}
    request: dict[str, Any] = dict(extra)
    if request.pop("freeinit", False):
        ad.update(freeinit_enable=True, freeinit_iters=2)
    if "window_mode" in request:
        ad["window_mode"] = request.pop("window_mode")
    args = {"enable": True, "model": "tiny_v2.safetensors", "format": FRAMES_ONLY, "video_length": 0,
            "batch_size": 4, "closed_loop": "N", **ad}

    def run(*units: dict[str, Any]) -> list[np.ndarray]:
        payload = tiny_txt2img(seed=11, prompt="masterpiece\n0: a calm sea\n4: a storm", **request,
                               alwayson_scripts={"AnimateDiff": {"args": [{**args, "video_length": 8}]},
                                                 "ControlNet": {"args": list(units)}})
        return frame_pixels(api.post("/sdapi/v1/txt2img", payload))

    controlled, plain = run(unit(cn_model)), run()
    size = 96 if "enable_hr" in request else SIZE
    assert len(controlled) == len(plain) == 8 and controlled[0].shape == (size, size, 3)
    assert min(int(np.abs(a - b).max()) for a, b in zip(controlled, plain)) > 10, "ControlNet changed no frame"
