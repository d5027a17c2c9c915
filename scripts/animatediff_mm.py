"""`scripts.animatediff_mm`: the names sd-webui-controlnet imports for SparseCtrl (`MotionWrapper`,
`MotionModuleType`). ControlNet builds SparseCtrl's temporal layers through `MotionWrapper("", "",
MotionModuleType.SparseCtrl)`; they are the engine's (`motion_module.sparsectrl`), grouped by the running
AnimateDiff generation's frames."""


import importlib
from enum import Enum
from typing import Any

from motion_module.control.sparsectrl import SparseCtrlMotion
from motion_module.errors import MotionModuleError


class MotionModuleType(Enum):
    AnimateDiffV1 = "v1"
    AnimateDiffV2 = "v2"
    AnimateDiffV3 = "v3"
    AnimateDiffXL = "sdxl"
    HotShotXL = "hotshot"
    AnimateLCM = "animatelcm"
    SparseCtrl = "sparsectrl"


class MotionWrapper(SparseCtrlMotion):
    """SparseCtrl's temporal layers; ControlNet then calls `load_state_dict(tensors, strict=True)`."""

    def __init__(self, mm_name: str = "", mm_hash: str = "", mm_type: Any = None) -> None:
        if getattr(mm_type, "value", mm_type) != MotionModuleType.SparseCtrl.value:
            raise MotionModuleError(f"MotionWrapper builds SparseCtrl's temporal layers only, not {mm_type}; "
                                    "motion modules are chosen in the AnimateDiff panel")
        super().__init__()
        self.mm_name, self.mm_hash, self.mm_type = mm_name, mm_hash, MotionModuleType.SparseCtrl


# WebUI loads this file under its own name; ControlNet imports it at run time as
# `scripts.animatediff_mm`, which resolves only while the extension's folder is on sys.path (during
# loading): register that name now.
if __name__ != "scripts.animatediff_mm":
    importlib.import_module("scripts.animatediff_mm")
