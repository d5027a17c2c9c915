"""FILM frame interpolation through the Deforum extension's own FILM code, as the reference offered it.

Facts from Deforum (https://github.com/deforum-art/sd-webui-deforum), which this file only calls:
* Once WebUI has loaded it, Deforum has put its ``scripts`` and ``scripts/deforum_helpers/src`` folders on
  ``sys.path``, so its FILM entry point imports as ``film_interpolation.film_inference``.
* ``run_film_interp_infer(model_path, input_folder, save_folder, inter_frames)`` reads the PNG/JPG frames of
  ``input_folder`` in name order and writes ``frame_%09d.png`` into ``save_folder``: every input frame, with
  ``inter_frames`` frames between each pair ((n - 1) * (inter_frames + 1) + 1 frames). It runs on CUDA.
* Its model ``film_net_fp16.pt`` lives in ``<WebUI models>/Deforum/film_interpolation``;
  ``deforum_helpers.frame_interpolation.check_and_download_film_model(name, folder)`` downloads it when missing.

Here X - 1 frames go between each pair; a closed loop hands FILM the first frame again at the end (and drops
it from the result), an open clip holds its last frame: N * X frames, as ``interpolation.py`` states. The
generated frames themselves are put back as they were (FILM's copies went through its own conversions).
"""

from __future__ import annotations

import importlib
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from motion_module.errors import InterpolationError

DEFORUM_PAGE = "https://github.com/deforum-art/sd-webui-deforum"
FILM_MODEL = "film_net_fp16.pt"


def deforum_film() -> tuple[Any, Any]:
    """Deforum's FILM module and its model helper; InterpolationError saying what to do when absent."""
    try:
        inference = importlib.import_module("film_interpolation.film_inference")
        helpers = importlib.import_module("deforum_helpers.frame_interpolation")
    except ImportError as exc:
        raise InterpolationError(f"FILM runs through the Deforum extension, which is not installed or not loaded "
                                 f"({exc}): install {DEFORUM_PAGE} from WebUI's Extensions tab and restart WebUI, "
                                 "or choose interp RIFE") from None
    return inference, helpers


def film_model_folder(models_path: Path) -> Path:
    """Where Deforum keeps (and downloads) FILM's model."""
    return models_path / "Deforum" / "film_interpolation"


def film_frames(frames: Sequence[Image.Image], factor: int, loop: bool, host: Any) -> list[Image.Image]:
    """``frames`` with X - 1 FILM frames after each (``host``: an ``InterpHost`` with ``models_path``)."""
    sources = list(frames) + ([frames[0]] if loop and frames else [])
    if factor <= 1 or len(sources) < 2:
        return [f for frame in frames for f in [frame] + [frame.copy() for _ in range(factor - 1)]]
    inference, helpers = deforum_film()
    if host.models_path is None:
        raise InterpolationError("FILM needs the host's models folder (where Deforum keeps film_net_fp16.pt)")
    folder = film_model_folder(Path(host.models_path))
    helpers.check_and_download_film_model(FILM_MODEL, str(folder))
    with tempfile.TemporaryDirectory(prefix="animatediff-film-") as work:
        given, made = Path(work, "frames"), Path(work, "film")
        given.mkdir()
        made.mkdir()
        for i, frame in enumerate(sources):
            frame.convert("RGB").save(given / f"{i:05d}.png")
        inference.run_film_interp_infer(model_path=str(folder / FILM_MODEL), input_folder=str(given),
                                        save_folder=str(made), inter_frames=factor - 1)
        files = sorted(made.glob("*.png"))
        expected = (len(sources) - 1) * factor + 1
        if len(files) != expected:
            raise InterpolationError(f"Deforum's FILM wrote {len(files)} frames, {expected} expected")
        out = [Image.open(path).convert("RGB") for path in files]
    out = out[:-1] if loop else out + [frames[-1].copy() for _ in range(factor - 1)]
    for i, frame in enumerate(frames):
        out[i * factor] = frame
    return out


__all__ = ["DEFORUM_PAGE", "FILM_MODEL", "deforum_film", "film_frames", "film_model_folder"]
