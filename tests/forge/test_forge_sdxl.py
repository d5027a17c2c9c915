"""AnimateDiff-SDXL and HotShot-XL on a live Forge, with a tiny random SDXL checkpoint Forge builds its own SDXL
engine for, and the same request on A1111 1.10 for comparison.

The checkpoint is ``tiny-sdxl2816`` (tests/fixtures/webui_checkpoint_xl.py, ``FULL_ADM_SHAPE``): SDXL's ADM width
2816, which Forge's SDXL conditioner fixes, with tiny text encoders. This module writes it into the data dirs of
the session's Forge (recognised through ``tiny_guess_ext``'s ``TinySDXL``) and, for the comparison, of the
session's A1111 (``a1111_openclip_ext`` registers its text tower with open_clip), switches both to it for its
tests and back at the end. Live previews are off meanwhile (both hosts would download an SDXL preview model).
Motion modules match its UNet (channels 32/64/128). Skipped unless ANIMATEDIFF_FORGE_DIR is set (conftest.py);
the comparison also needs ANIMATEDIFF_WEBUI_DIR.
"""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.fixtures.motion_modules import build_state_dict, write_checkpoint
from tests.fixtures.webui_checkpoint_xl import FULL_ADM_SHAPE, build_tiny_sdxl_checkpoint
from tests.webui.checks import TRAVEL, assert_img2img_fades, assert_prompt_travel
from tests.webui.client import (
    FRAMES_ONLY,
    WebUIClient,
    expect_error,
    frame_pixels,
    gif_frames,
    png_bytes,
    tiny_txt2img,
    videos,
)

from .conftest import MEASURED, ForgeSession

MODULES = {"xl_sdxl.safetensors": "sdxl", "xl_hotshot.safetensors": "hotshot"}
SD15_MODULE = "xl_v2_for_sd15.safetensors"
XL_OPTIONS = {"live_previews_enable": False}
# Measured here (forge-kit Forge dfdcbab6 vs webui-kit A1111 1.10.1, CPU, fp32, Euler, 2 steps, 64x64, the tiny
# SDXL checkpoint): every case max 1/255, mean 0.03-0.04/255 per pixel, as two plain images (max 1, mean 0.036)
TOLERANCE = 1  # largest per-pixel difference allowed, in 1/255
MEAN_TOLERANCE = 0.1  # mean absolute difference over all frames, in 1/255
WINDOWS = {"video_length": 10, "overlap": 2}
CASES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {  # name: (AnimateDiff arguments, request fields)
    "AnimateDiff-SDXL, two windows": ({"model": "xl_sdxl.safetensors", **WINDOWS}, {}),
    "HotShot-XL (cross-frame GroupNorm), two windows": ({"model": "xl_hotshot.safetensors", **WINDOWS}, {}),
    "AnimateDiff-SDXL, prompt travel, closed loop": ({"model": "xl_sdxl.safetensors", **WINDOWS,
                                                      "closed_loop": "R+P"}, {"prompt": TRAVEL}),
}


@pytest.fixture(scope="module")
def xl_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_sdxl_checkpoint(tmp_path_factory.mktemp("tiny-sdxl"), shape=FULL_ADM_SHAPE)


@pytest.fixture(scope="module")
def xl_modules(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("animatediff-xl-models")
    for name, family in MODULES.items():
        write_checkpoint(folder / name, build_state_dict(family, seed=5))
    write_checkpoint(folder / SD15_MODULE, build_state_dict("v2", seed=5))
    return folder


@contextmanager
def switch_to(client: WebUIClient, data_dir: Path, checkpoint: Path, modules: Path) -> Iterator[WebUIClient]:
    """Copy ``checkpoint`` (and its yaml) into the host's models, load it, take the motion modules from
    ``modules``; put the previous checkpoint and options back at the end."""
    models = data_dir / "models" / "Stable-diffusion"
    for path in (checkpoint, checkpoint.with_suffix(".yaml")):
        shutil.copyfile(path, models / path.name)
    client.post("/sdapi/v1/refresh-checkpoints")
    before = client.options()
    previous = {k: before[k] for k in ("sd_model_checkpoint", "animatediff_model_path", *XL_OPTIONS) if k in before}
    client.post("/sdapi/v1/options", {**XL_OPTIONS, "sd_model_checkpoint": checkpoint.name,
                                      "animatediff_model_path": str(modules)})
    try:
        assert client.options()["sd_model_checkpoint"].startswith(checkpoint.stem), client.options()
        yield client
    finally:
        client.post("/sdapi/v1/options", previous)


@pytest.fixture(scope="module")
def forge_xl(forge_session: ForgeSession, xl_checkpoint: Path, xl_modules: Path) -> Iterator[WebUIClient]:
    with switch_to(forge_session.client(), forge_session.data_dir, xl_checkpoint, xl_modules) as client:
        yield client


@pytest.fixture(scope="module")
def a1111_xl(a1111: WebUIClient, a1111_data_dir: Path, xl_checkpoint: Path, xl_modules: Path
             ) -> Iterator[WebUIClient]:
    with switch_to(a1111, a1111_data_dir, xl_checkpoint, xl_modules) as client:
        yield client


def ad_payload(ad: dict[str, Any], **extra: Any) -> dict[str, Any]:
    args = {"enable": True, "model": "xl_sdxl.safetensors", "format": ["GIF"], "video_length": 8,
            "batch_size": 8, **ad}
    return tiny_txt2img(seed=7, alwayson_scripts={"AnimateDiff": {"args": [args]}}, **extra)


def frames(api: WebUIClient, ad: dict[str, Any], **extra: Any) -> list[np.ndarray]:
    return frame_pixels(api.post("/sdapi/v1/txt2img", ad_payload({**ad, "format": FRAMES_ONLY}, **extra)))


def plain(api: WebUIClient) -> bytes:
    return png_bytes(api.txt2img(**tiny_txt2img(seed=99)))[0]


@pytest.mark.parametrize("name", list(MODULES))
def test_txt2img_gives_a_video_the_motion_modules_made(forge_xl: WebUIClient, name: str) -> None:
    """A GIF of 8 frames from Forge's SDXL engine, whose frames differ; with motion scale 0 (SD's own schedule)
    other frames than with scale 1: the motion modules ran."""
    response = forge_xl.post("/sdapi/v1/txt2img", ad_payload({"model": name}))
    shot = gif_frames(videos(response)[0])
    assert len(shot) == 8 and shot[0].size == (64, 64), (len(shot), shot[0].size)
    assert shot[0].tobytes() != shot[-1].tobytes()
    info = json.loads(response["info"])
    assert info["sd_model_name"] == FULL_ADM_SHAPE.stem, info["sd_model_name"]
    entry = info["extra_generation_params"]["AnimateDiff"]
    assert f"model: {name}" in entry and f"family: {MODULES[name]}" in entry, entry
    sd_schedule = {"model": name, "schedule": "scaled_linear"}
    moving, still = frames(forge_xl, sd_schedule), frames(forge_xl, {**sd_schedule, "motion_scale": 0})
    assert len(moving) == len(still) == 8
    assert min(int(np.abs(a - b).max()) for a, b in zip(moving, still)) > 2, "the motion modules changed no frame"


def test_windows_run_with_both_families(forge_xl: WebUIClient) -> None:
    """14 frames in windows of 8 (overlap 2, closed loop): a video of 14 frames, other than one window of 14."""
    for name in MODULES:
        windowed = frames(forge_xl, {"model": name, "video_length": 14, "overlap": 2, "closed_loop": "R-P"})
        whole = frames(forge_xl, {"model": name, "video_length": 14, "batch_size": 14, "closed_loop": "R-P"})
        assert len(windowed) == len(whole) == 14
        assert max(int(np.abs(a - b).max()) for a, b in zip(windowed, whole)) > 0, name


@pytest.mark.parametrize(("name", "frame_independent"), [("xl_sdxl.safetensors", True),
                                                      ("xl_hotshot.safetensors", False)])  # GroupNorm pools frames
def test_prompt_travel_gives_each_frame_its_keyframes_cond(forge_xl: WebUIClient, name: str,
                                                            frame_independent: bool) -> None:
    """The A1111 tier's check with SDXL's conds (crossattn and the ADM vector) on Forge."""
    assert_prompt_travel(lambda prompt, scale: frames(forge_xl, {"model": name, "motion_scale": scale}, prompt=prompt),
                         frame_independent=frame_independent)


@pytest.mark.parametrize(("name", "frame_independent"), [("xl_sdxl.safetensors", True),
                                                      ("xl_hotshot.safetensors", False)])  # GroupNorm pools frames
def test_img2img_fades_the_init_and_last_images(forge_xl: WebUIClient, name: str, frame_independent: bool) -> None:
    assert_img2img_fades(forge_xl, name, frame_independent=frame_independent)


def test_plain_txt2img_is_byte_identical_before_and_after(forge_xl: WebUIClient) -> None:
    """On the SDXL checkpoint: after each family's run (HotShot: the cross-frame GroupNorm wrapper) and after a
    failure mid-sampling, a plain image is the same bytes as before."""
    before = plain(forge_xl)
    for name in MODULES:
        forge_xl.post("/sdapi/v1/txt2img", ad_payload({"model": name, "video_length": 10, "overlap": 2}))
        assert plain(forge_xl) == before, name
    expect_error(forge_xl, ad_payload({}, prompt="a cat AND a dog"), "AND")  # fails with the UNet patched
    assert plain(forge_xl) == before


def test_sd15_module_on_sdxl_is_refused(forge_xl: WebUIClient) -> None:
    expect_error(forge_xl, ad_payload({"model": SD15_MODULE}), "SD1.5", "SDXL")


def test_plain_sdxl_images_agree(forge_xl: WebUIClient, a1111_xl: WebUIClient) -> None:
    a, b = (np.asarray(Image.open(io.BytesIO(plain(client))).convert("RGB"), dtype=np.int16)
            for client in (forge_xl, a1111_xl))
    worst = int(np.abs(a - b).max())
    MEASURED.append(f"Forge vs A1111, plain SDXL image: max {worst}/255, mean {float(np.abs(a - b).mean()):.4f}/255")
    assert worst <= TOLERANCE, worst


@pytest.mark.parametrize("case", list(CASES))
def test_same_sdxl_video_on_both_hosts(forge_xl: WebUIClient, a1111_xl: WebUIClient, case: str) -> None:
    ad, extra = CASES[case]
    on_forge, on_a1111 = frames(forge_xl, ad, **extra), frames(a1111_xl, ad, **extra)
    assert len(on_forge) == len(on_a1111) == ad["video_length"]
    diffs = [np.abs(f - a) for f, a in zip(on_forge, on_a1111)]
    worst, mean = max(int(d.max()) for d in diffs), float(np.mean([d.mean() for d in diffs]))
    MEASURED.append(f"Forge vs A1111, {case}: max {worst}/255, mean {mean:.4f}/255 per pixel")
    still = frames(forge_xl, {**ad, "motion_scale": 0}, **extra)
    assert min(int(np.abs(f - s).max()) for f, s in zip(on_forge, still)) > 10 * TOLERANCE  # a real comparison
    assert worst <= TOLERANCE and mean <= MEAN_TOLERANCE, (worst, mean)

