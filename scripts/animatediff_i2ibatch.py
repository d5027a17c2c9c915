"""`scripts.animatediff_i2ibatch.animatediff_i2i_batch`, which sd-webui-controlnet calls instead of
img2img's batch tab when AnimateDiff is on. Video-to-video from a batch folder is not implemented yet:
say so clearly instead of producing one unrelated clip per image."""


from typing import Any

from motion_module.errors import ParameterError


def animatediff_i2i_batch(p: Any, *args: Any, **kwargs: Any) -> None:
    raise ParameterError(
        "img2img batch", "AnimateDiff does not support the img2img Batch tab yet; use the img2img tab with "
        "one init image (and optionally a last frame), or txt2img with ControlNet")
