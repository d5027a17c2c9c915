"""The img2img Batch tab with AnimateDiff on: the input folder's images become the init frames of ONE video.

`scripts.animatediff_i2ibatch.animatediff_i2i_batch` is what sd-webui-controlnet calls instead of img2img's
`process_batch` when AnimateDiff is on; without ControlNet, the same replacement is installed here (once,
whichever copy of this file WebUI or ControlNet imports, and undone when scripts unload). Each image is one
frame (encoded separately; denoising strength applies), and the folder is also the frame source of
ControlNet units that have no input of their own. Imports nothing from the other files in scripts/.
"""

import importlib
from pathlib import Path
from typing import Any

from modules import img2img, patches, processing, script_callbacks
from PIL import Image

from animatediff_hosts.a1111 import I2I_BATCH_ATTR  # read there by video_input
from motion_module.core.patch import Changes
from motion_module.core.request_guard import undo_on_close
from motion_module.params.request import from_script_args, script_slice
from motion_module.video.input import read_frame_folder

PATCH_KEY = "sd-webui-animatediff-engine"


def _enabled(p: Any) -> bool:
    args = None
    try:
        args = script_slice(p.scripts, p.script_args, "animatediff")
        return bool(args) and from_script_args(args).enable
    except Exception:  # a bad AnimateDiff argument is reported by AnimateDiff itself, not here
        return bool(args and args[0] is True)


def _load(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


def animatediff_i2i_batch(p: Any, input: Any, output_dir: str = "", *args: Any, **kwargs: Any) -> Any:
    """One video from the batch input: a folder (natural order) or the uploaded files (in their order)."""
    files = read_frame_folder(input) if isinstance(input, str) else [Path(getattr(f, "name", f)) for f in input]
    edits = Changes()  # p set up as WebUI's own batch loop does, put back when WebUI closes p
    edits.set_attribute(p, "init_images", [_load(path) for path in files])
    edits.set_attribute(p, I2I_BATCH_ATTR, Path(input) if isinstance(input, str) else files[0].parent)
    if output_dir and output_dir.strip():
        edits.set_attribute(p, "outpath_samples", output_dir.strip())
    undo_on_close(p, edits)
    return processing.process_images(p)


def _process_batch(p: Any, *args: Any, **kwargs: Any) -> Any:
    if _enabled(p):
        return animatediff_i2i_batch(p, *args, **kwargs)
    return patches.original(PATCH_KEY, img2img, "process_batch")(p, *args, **kwargs)


try:
    patches.patch(PATCH_KEY, img2img, "process_batch", _process_batch)
    script_callbacks.on_script_unloaded(lambda: patches.undo(PATCH_KEY, img2img, "process_batch"))
except RuntimeError:  # the other copy of this file already installed it
    pass


# WebUI loads this file under its own name; ControlNet imports it at run time as
# `scripts.animatediff_i2ibatch`, which resolves only while the extension's folder is on sys.path (during
# loading): register that name now.
if __name__ != "scripts.animatediff_i2ibatch":
    importlib.import_module("scripts.animatediff_i2ibatch")
