"""AnimateDiff's X/Y/Z-plot axes on a live A1111 1.10 started API-only (--nowebui, as this tier launches it):
listed by /sdapi/v1/script-info, and each cell of an X/Y/Z plot run through the API gets its axis value."""

from __future__ import annotations

import io
import json
import re
from typing import Any

import numpy as np
from PIL import Image

from motion_module.params.fields import XYZ_FIELDS

from .client import WebUIClient, ad_payload, infotexts, png_bytes

XYZ = "x/y/z plot"
MOTION_SCALE = "[AnimateDiff] Motion scale"
# a video format: inside the X/Y/Z script the frames stay images (its grid is drawn from them), videos go to disk
AD = {"format": ["GIF"], "video_length": 4, "batch_size": 4}
FRAMES = {**AD, "format": ["PNG"]}  # a plain request's frames, to compare the cells with


def _axis_labels(api: WebUIClient, img2img: bool) -> list[str]:
    """The X type choices of the X/Y/Z script, as the script's own ui() listed them."""
    info = next(s for s in api.get("/sdapi/v1/script-info") if s["name"] == XYZ and s["is_img2img"] == img2img)
    x_type = next(arg for arg in info["args"] if arg["label"] == "X type")
    return list(x_type["choices"])


def _xyz_args(x_type: int, x_values: str) -> list[Any]:
    """xyz_grid.py's run(): x/y/z type, values, dropdown values; legend, lone images, sub-grids, no fixed seeds,
    vary seeds x/y/z, margin, csv mode."""
    return [x_type, x_values, [], 0, "", [], 0, "", [], True, True, False, False, False, False, False, 0, False]


def _pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)


def test_script_info_lists_every_animatediff_axis_once_without_the_web_ui(api: WebUIClient) -> None:
    for img2img in (False, True):
        labels = _axis_labels(api, img2img)
        assert "[ControlNet] Weight" in labels  # the real list, which another extension extends too
        ours = [label for label in labels if label.startswith("[AnimateDiff] ")]
        assert ours == [f"[AnimateDiff] {spec.label}" for spec in XYZ_FIELDS], (img2img, labels)


def test_xyz_plot_over_motion_scale_gives_each_cell_its_value(api: WebUIClient) -> None:
    labels = _axis_labels(api, img2img=False)
    response = api.post("/sdapi/v1/txt2img", ad_payload(AD, script_name=XYZ,
                                                         script_args=_xyz_args(labels.index(MOTION_SCALE), "0, 0.5")))
    images = [_pixels(data) for data in png_bytes(response)]
    assert len(images) == 3 and images[0].shape[:2] != images[1].shape[:2]  # the grid, then cells 0 and 1
    still, half = images[1], images[2]
    assert np.abs(still - half).mean() > 1.0  # motion scale 0 vs 0.5: the motion modules changed the frames
    texts = infotexts(response)
    assert f"X Type: {MOTION_SCALE}" in texts[0], texts[0]
    assert [re.findall(r"motion_scale: ([0-9.]+)", text) for text in texts[1:]] == [["0"], ["0.5"]], texts[1:]
    assert not any("AnimateDiff files" in text for text in texts), texts  # no cell's files in another's infotext
    files = json.loads(response["info"])["extra_generation_params"]["AnimateDiff files"]  # X/Y/Z: the 1st cell's
    assert len(files) == 1 and files[0].endswith(".gif"), files  # the cells' videos were written
    for scale, cell in ((0, still), (0.5, half)):  # each cell is the first frame of that plain request
        direct = png_bytes(api.post("/sdapi/v1/txt2img", ad_payload({**FRAMES, "motion_scale": scale})))
        assert len(direct) == 4
        assert np.array_equal(_pixels(direct[0]), cell), scale
    assert json.loads(response["info"])["seed"] == 7
