"""detect_spec on every family and layout, from tensor shapes only."""

from __future__ import annotations

import pytest
import torch

from motion_module.errors import NotAMotionModuleError
from motion_module.files.spec import FAMILIES, detect_spec
from tests.fixtures.motion_modules import (
    FAMILY_CASES,
    build_case,
    build_state_dict,
    unrelated_state_dict,
)


def _params(state_dict: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() for k, t in state_dict.items() if not k.endswith("pos_encoder.pe"))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("case", FAMILY_CASES, ids=lambda c: c.name)
def test_detect_spec_every_family_and_layout(case, dtype):
    spec = detect_spec(build_case(case, dtype=dtype))
    assert spec.family == case.expected_family
    assert spec.base == case.base
    assert spec.channels == case.channels
    assert spec.max_frames == case.max_frames
    assert spec.mid_block == case.mid_block
    assert spec.dtype == dtype
    assert spec.pe_stored == case.pe_stored
    # parameter count (positional tables excluded) is layout-independent
    assert spec.params == _params(build_state_dict(case.family))
    assert spec.family in FAMILIES


def test_family_properties():
    v1 = detect_spec(build_state_dict("v1"))
    v2 = detect_spec(build_state_dict("v2"))
    sdxl = detect_spec(build_state_dict("sdxl"))
    hotshot = detect_spec(build_state_dict("hotshot", layout="hotshot"))
    assert [s.cross_frame_groupnorm for s in (v1, v2, sdxl, hotshot)] == [True, False, False, True]
    assert (v1.module_count, v2.module_count, sdxl.module_count) == (20, 21, 15)
    assert v2.beta_schedule == "linear" and sdxl.beta_schedule == "scaled_linear"
    assert "up to 24 frames" in v1.describe() and "with mid block" in v2.describe()


def test_real_sized_channels_are_reported_as_stored():
    spec = detect_spec(build_state_dict("v3", channels=(64, 96, 160, 160)))
    assert spec.channels == (64, 96, 160, 160) and spec.family == "v3"
    xl = detect_spec(build_state_dict("sdxl", channels=(64, 128, 192)))
    assert xl.channels == (64, 128, 192) and xl.base == "sdxl"


def test_not_a_motion_module():
    with pytest.raises(NotAMotionModuleError, match="not a motion module"):
        detect_spec(unrelated_state_dict())
    with pytest.raises(NotAMotionModuleError):
        detect_spec({})


def test_wrong_level_count_is_rejected():
    with pytest.raises(NotAMotionModuleError, match="5 UNet levels"):
        detect_spec(build_state_dict("v2", channels=(32, 32, 32, 32, 32)))


def test_dtype_comes_from_the_weights_not_the_positional_tables():
    weights = build_state_dict("v3", channels=(32, 32, 32, 32), dtype=torch.float16)
    tables_first = {k: v.float() for k, v in weights.items() if k.endswith("pos_encoder.pe")}
    tables_first.update({k: v for k, v in weights.items() if not k.endswith("pos_encoder.pe")})
    assert next(iter(tables_first.values())).dtype == torch.float32
    assert detect_spec(tables_first).dtype == torch.float16


@pytest.mark.parametrize("case", FAMILY_CASES, ids=lambda c: c.name)
def test_motion_norm_pooling_per_family(case):
    """Only AnimateDiff-SDXL's own motion norm pools over the frames of a video; independent of the UNet's."""
    spec = detect_spec(build_case(case))
    assert spec.motion_norm == ("video" if case.expected_family == "sdxl" else "frame")
