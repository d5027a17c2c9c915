"""Frame interpolation through the HTTP API of a live A1111 1.10: RIFE with random weights written into the
motion-module folder (where the extension looks for them by default)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import imageio.v3 as iio
from PIL import Image

from tests.fixtures.rife import tiny_ifnet, write_weights

from .client import WebUIClient, ad_payload, png_bytes, videos


def test_rife_returns_n_times_x_frames_at_the_scaled_rate(api: WebUIClient, module_dir: Path) -> None:
    weights = write_weights(module_dir / "flownet.pkl", tiny_ifnet(11))
    try:
        response = api.post("/sdapi/v1/txt2img", ad_payload(
            {"format": ["GIF", "MP4", "Frame"], "video_length": 6, "fps": 8, "closed_loop": "R-P",
             "interp": "RIFE", "interp_x": 3}))
    finally:
        weights.unlink()
    info = json.loads(response["info"])
    notes = info["extra_generation_params"].get("AnimateDiff notes", [])
    assert not [note for note in notes if "interpolation" in note], notes
    gif, mp4 = videos(response)[:2]
    frames = png_bytes(response)[2:]
    assert len(frames) == 6 * 3 and {Image.open(io.BytesIO(f)).size for f in frames} == {(64, 64)}
    assert iio.imread(mp4, extension=".mp4").shape[0] == 18 and iio.immeta(mp4, extension=".mp4")["fps"] == 24
    image = Image.open(io.BytesIO(gif))
    durations = []
    for index in range(image.n_frames):
        image.seek(index)
        durations.append(image.info["duration"])
    assert image.n_frames == 18 and abs(sum(durations) - 750) <= 10  # 6 frames at 8 fps: 0.75 s, as without
    assert "interp: RIFE, interp_x: 3" in info["infotexts"][0]


def test_rife_without_weights_keeps_the_frames_and_says_why(api: WebUIClient, module_dir: Path) -> None:
    response = api.post("/sdapi/v1/txt2img", ad_payload(
        {"format": ["MP4"], "video_length": 4, "fps": 8, "interp": "RIFE", "interp_x": 2}))
    notes = json.loads(response["info"])["extra_generation_params"]["AnimateDiff notes"]
    assert [note for note in notes if "frame interpolation (RIFE x2; the video is saved without it) failed: no RIFE "
            "weights in" in note and "Practical-RIFE" in note], notes
    mp4 = videos(response)[0]
    assert iio.imread(mp4, extension=".mp4").shape[0] == 4 and iio.immeta(mp4, extension=".mp4")["fps"] == 8
