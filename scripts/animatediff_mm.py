"""`scripts.animatediff_mm` names sd-webui-controlnet imports for SparseCtrl. SparseCtrl is not
supported yet; constructing its wrapper says so instead of failing obscurely."""


import importlib
from enum import Enum
from typing import Any

from motion_module.errors import MotionModuleError


class MotionModuleType(Enum):
    AnimateDiffV1 = "v1"
    AnimateDiffV2 = "v2"
    AnimateDiffV3 = "v3"
    AnimateDiffXL = "sdxl"
    HotShotXL = "hotshot"
    AnimateLCM = "animatelcm"
    SparseCtrl = "sparsectrl"


class MotionWrapper:
    def __init__(self, mm_name: str = "", mm_hash: str = "", mm_type: Any = None) -> None:
        raise MotionModuleError("SparseCtrl motion modules are not supported by this AnimateDiff extension yet")


# WebUI loads this file under its own name; ControlNet imports it at run time as
# `scripts.animatediff_mm`, which resolves only while the extension's folder is on sys.path (during
# loading): register that name now.
if __name__ != "scripts.animatediff_mm":
    importlib.import_module("scripts.animatediff_mm")
